"""The label value that losses skip, shared by the data pipeline, the collator, the model and the analyses.

Dependency-free on purpose: packing and attention use it without importing torch models or transformers.
"""

from __future__ import annotations

__all__ = ["IGNORE_INDEX"]

IGNORE_INDEX = -100  # torch's cross_entropy default ignore_index: a token not masked, or no sentence pair (mlm)
