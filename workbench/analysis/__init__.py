"""Stage 4: attention and per-head statistics, and their progression over checkpoints."""

__all__: list[str] = []
