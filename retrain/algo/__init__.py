"""Pure-numpy algorithm core: the algorithm names (`modes`), episode advantages, token
transforms (gtpo, hicra, sepa), token uncertainty, planning-token detection and the
back-pressure controller.

Nothing here imports torch, transformers, peft or wandb, nor anything else of `retrain`:
the trainer hands in flat numpy arrays plus offsets and gets numpy arrays and plain metric
dicts back. Import the submodules directly (`retrain.algo.pipeline`, `retrain.algo.sepa`, ...).
"""
