"""Short names for encoders and checkpoints, wherever a person reads them (legends, tables, sentences).

An encoder is named by a spec: a checkpoint or run dir (often an absolute path), ``random:SPEC``
(its random twin) or ``builtin:minilm``. Figures and tables show :func:`label_for` ("checkpoint
(02)", "random twin", "MiniLM") and keep the full spec for a tooltip; the data (``probe_gain``'s
dict, the runs frames) keep the raw specs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

__all__ = ["is_path_like", "label_for", "labels_for", "short_value"]

_RANDOM = "random:"
_BUILTINS = {"builtin:minilm": "MiniLM"}
_STEP = re.compile(r"^checkpoint-(\d+)$")
_ENCODER_NAMES = ("model", "init", "checkpoint", "baseline")  # parameters and columns that name an encoder
_TRAINER = "02"  # the notebook that trains: a report's checkpoint is its output
_PREFIXED_PATH = re.compile(r"^(?P<prefix>[A-Za-z][\w-]*):(?P<path>[/~].*)$")  # heldout:/data/x, random:/runs/y


def is_path_like(text: Any) -> bool:
    """Whether ``text`` names a file or folder: absolute, ``~/``, ``./``, ``../``, two or more ``/``, or one and it exists.

    One slash alone is a hub name (``google/bert_uncased_L-2_H-128_A-2``) unless such a path exists;
    text with markup characters, a URL or a line break is never a path.
    """
    if not isinstance(text, str) or not text or "://" in text or any(c in text for c in '<>"\n'):
        return False
    if text.startswith(("/", "~/", "./", "../")):
        return True
    return text.count("/") >= 2 or ("/" in text and os.path.exists(text))


def _checkpoint_label(path: str) -> str:
    p = PurePath(path.rstrip("/") or "/")
    step = _STEP.match(p.name)
    if step:
        p = p.parent
    # `<run dir>/checkpoint` is what a report's 02 writes; 02's own default out is runs/02_pretraining.
    owner = _TRAINER if p.name == "checkpoint" or p.name.startswith(f"{_TRAINER}_") else p.name or str(p)
    return f"checkpoint ({owner}" + (f", step {step.group(1)})" if step else ")")


def label_for(spec: Any) -> str:
    """A short name for an encoder spec: "checkpoint (02)", "random twin", "MiniLM"; other names unchanged."""
    if not isinstance(spec, str):
        return str(spec)
    if spec.startswith(_RANDOM):
        return "random twin"
    if spec in _BUILTINS:
        return _BUILTINS[spec]
    if is_path_like(spec):
        return _checkpoint_label(spec)
    return spec


def labels_for(specs: Iterable[Any]) -> dict[Any, str]:
    """:func:`label_for` of each distinct spec, made unique: a clash names the run folder, or the twin's model."""
    specs = list(dict.fromkeys(specs))
    labels = {s: label_for(s) for s in specs}
    groups: dict[str, list[Any]] = {}
    for s in specs:
        groups.setdefault(labels[s], []).append(s)
    for clash in (g for g in groups.values() if len(g) > 1):
        twins = [s for s in clash if isinstance(s, str) and s.startswith(_RANDOM)]
        inner = labels_for([s[len(_RANDOM):] for s in twins])
        for s in clash:
            labels[s] = (f"{labels[s]} of {inner[s[len(_RANDOM):]]}" if s in twins
                         else f"{labels[s]} in {_folder(s)}")
    seen: dict[str, int] = {}
    for s in specs:  # still the same (one path twice, spelt two ways): number them, in order
        seen[labels[s]] = seen.get(labels[s], 0) + 1
        if seen[labels[s]] > 1:
            labels[s] = f"{labels[s]} #{seen[labels[s]]}"
    return labels


def _folder(spec: Any) -> str:
    """The run folder a checkpoint path sits in (the parent of ``checkpoint``/``checkpoint-N``)."""
    if not isinstance(spec, str) or not is_path_like(spec):
        return str(spec)
    p = PurePath(spec.rstrip("/"))
    while p.name and (p.name == "checkpoint" or _STEP.match(p.name)):
        p = p.parent
    return p.name or str(p)


def short_value(value: Any, name: str = "") -> str:
    """A value for a table cell: an encoder (``name`` model or init) by :func:`label_for`, another path by its last part."""
    if not isinstance(value, str):
        return str(value)
    if name in _ENCODER_NAMES or value.startswith(_RANDOM) or value in _BUILTINS:
        return label_for(value)
    m = _PREFIXED_PATH.match(value)
    if m:
        return f"{m.group('prefix')}:{_tail(m.group('path'))}"
    return f"…/{_tail(value)}" if is_path_like(value) else value


def _tail(path: str) -> str:
    return PurePath(path.rstrip("/") or "/").name or path
