"""Stage 2: the model, the training step, the pretraining loop, run folders and checkpoints."""

__all__: list[str] = []
