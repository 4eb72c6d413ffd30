"""retrain: run and compare RLVR experiments on causal LMs with LoRA.

Data flow and package layout: docs/architecture.md. Importing this package is cheap:
torch, transformers and peft are imported only where a command needs them.
"""

__version__ = "0.1.0"
