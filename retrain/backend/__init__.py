"""Training backends. `local` is the torch engine (model, LoRA, sampler, loss, optimizer, checkpoints)."""
