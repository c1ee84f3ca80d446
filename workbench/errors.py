"""The one exception type the CLI turns into a one-line message and a non-zero exit, the
refusal every model loader gives for a checkpoint that is an unsafe pickle, the one-line
text of a library's exception quoted inside such a message, and the name of a path that is
neither a file nor a folder (a FIFO, a device) for such a message."""

from __future__ import annotations

import os
import pickle
import re
import stat
from pathlib import Path

__all__ = ["WorkbenchError", "one_line", "pickle_refusal", "special_kind"]

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class WorkbenchError(Exception):
    """A problem with the user's input: the message names the problem and the fix, in one line."""


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``exc``'s text with its whitespace runs (newlines too) collapsed, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    return (text if limit is None else text[:limit]) or type(exc).__name__


def pickle_refusal(exc: BaseException, what: str, path: str | Path) -> WorkbenchError | None:
    """The refusal for a checkpoint whose weights torch will not unpickle safely, or None for another error.

    torch's own message ends by suggesting ``weights_only=False``, i.e. running the pickle's
    code; the workbench never does, so it says so and offers the safe fix instead.
    """
    text = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" not in text:
        return None
    local = Path(path).expanduser()
    pickles = sorted(p for p in local.iterdir() if p.suffix in _PICKLE_SUFFIXES) if local.is_dir() else []
    file = pickles[0] if pickles else local
    needs = _GLOBAL.search(text)
    held = f"Python objects such as {needs.group(1)}" if needs else "Python objects"
    return WorkbenchError(
        f"refusing to load {what}: its weights '{file}' are a pickle holding {held}, not only "
        "tensors, and unpickling it could run arbitrary code; re-save the model as safetensors "
        "where you trust it (model.save_pretrained(DIR) writes model.safetensors), or pass another "
        "checkpoint"
    )


def special_kind(path: str | Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder ("a FIFO (named pipe)"), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((name for test, name in _SPECIAL if test(mode)), None)
