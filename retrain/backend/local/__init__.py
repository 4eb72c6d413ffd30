"""The local torch backend: model loading and the tiny model, LoRA, sampler, loss, optimizer, checkpoints.

Modules are imported directly (`from retrain.backend.local.sampler import sample`) so that importing
this package stays cheap; everything here imports torch.
"""
