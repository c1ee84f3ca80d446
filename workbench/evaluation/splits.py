"""Labelled splits: the task container and stratified splitting/sampling (pure numpy, seeded)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["TaskData", "stratified_sample", "stratified_split"]


def _allocate(counts: np.ndarray, total: int, minimum: int = 0) -> np.ndarray:
    """Share ``total`` over classes in proportion to ``counts`` (largest remainder), each in [min, count]."""
    quota = total * counts / max(counts.sum(), 1)
    low = np.minimum(minimum, counts)
    take = np.clip(np.floor(quota).astype(np.int64), low, counts)
    while take.sum() < total and (take < counts).any():
        take[np.argmax(np.where(take < counts, quota - take, -np.inf))] += 1
    while take.sum() > total and (take > low).any():
        take[np.argmax(np.where(take > low, take - quota, -np.inf))] -= 1
    return take


def stratified_split(labels: Sequence[Any], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Index arrays, one per fraction of the whole plus the rest, each class split alike."""
    y = np.asarray(labels).astype(str)
    classes, inverse = np.unique(y, return_inverse=True)
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
    used = np.zeros(len(classes), dtype=np.int64)
    parts = []
    for fraction in fractions:
        left = np.array([len(p) for p in pools]) - used
        take = _allocate(left, min(int(round(fraction * len(y))), int(left.sum())))
        parts.append(np.sort(np.concatenate([p[u:u + t] for p, u, t in zip(pools, used, take, strict=True)]
                                            or [np.zeros(0, np.int64)])))
        used += take
    parts.append(np.sort(np.concatenate([p[u:] for p, u in zip(pools, used, strict=True)] or [np.zeros(0, np.int64)])))
    return parts


def stratified_sample(labels: Sequence[Any], n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` examples in the classes' proportions, every class at least once."""
    y = np.asarray(labels).astype(str)
    classes, inverse = np.unique(y, return_inverse=True)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    take = _allocate(np.bincount(inverse, minlength=len(classes)), n, minimum=1)
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:t] for c, t in enumerate(take)]
    return np.sort(np.concatenate(chosen))


# ----------------------------------------------------------------------------------- task data
@dataclass
class TaskData:
    """Train/validation/test frames with columns text, text_b (pairs only) and label (str)."""

    name: str
    splits: dict[str, pd.DataFrame]
    labels: list[str]  # class names, in model output order
    pairs: bool
    notes: list[str] = field(default_factory=list)  # how the splits were made, rows dropped

    @property
    def sizes(self) -> dict[str, int]:
        """Rows per split."""
        return {k: len(v) for k, v in self.splits.items()}
