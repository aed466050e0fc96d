"""Training: data, pure losses, the trainer, one file per algorithm."""
