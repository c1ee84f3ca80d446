"""Stage 3: labelled tasks, fine-tuning, the fair learning-curve protocol, probes, statistics."""

__all__: list[str] = []
