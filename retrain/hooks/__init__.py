"""Instrumentation hooks: observers of named points of the step loop (docs/hooks.md).

base.py (points, payloads, the Hook protocol, interventions), builtin.py (norms, grad, entropy,
adv, lengths, rank, groups, timing), registry.py (names, groups, sinks, plugins), sinks.py
(hooks.csv, hooks.jsonl, wandb), runner.py (what the loop calls).
"""
