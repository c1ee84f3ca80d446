"""Stage 5: what the notebooks display: explore views, plots, paper figures, widgets, results."""

__all__: list[str] = []
