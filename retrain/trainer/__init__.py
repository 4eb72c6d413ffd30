"""The trainer: one run's step loop (`loop.train_run`), its setup, stages and state."""
