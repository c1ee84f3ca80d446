"""Folders shared by concurrent runs, on top of :mod:`workbench.outputs` (the one owner of output folders).

Run and sweep dirs are claimed with an exclusive mkdir and recorded in the reports root's
manifest; files are written atomically and only over names the workbench wrote; advisory
``flock`` locks serialise the reports index and keep one process per sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import WorkbenchError
from ..outputs import OutputDir, check_out_path, write_text_atomic

__all__ = ["OutputDir", "check_out_path", "claim_dir", "copy_checkpoints", "locked", "open_root", "write_atomic",
           "write_owned"]

write_atomic = write_text_atomic  # inside a folder the workbench owns as a whole (figures/)


def open_root(out_root: str | Path, command: str, flag: str = "--out") -> OutputDir:
    """The reports root: a file there is refused (one line), before any work; created if missing."""
    out = OutputDir.open(out_root, command, flag=flag)
    out.check_writable(["index.html"], hint=flag)  # the index is rebuilt after every run
    return out


def write_owned(folder: Path, name: str, text: str, command: str = "report") -> None:
    """Write ``folder/name`` atomically, recorded in the folder's manifest; a foreign file there is refused."""
    OutputDir.open(folder, command).write_text(name, text)


def claim_dir(root: OutputDir, base: str, exact: str | None = None) -> Path:
    """Create ``root/base`` (or ``base-2``, ``base-3``, ... when taken) with an exclusive mkdir, and record it.

    ``mkdir`` either creates the folder or fails, atomically, so two runs started at the same
    moment never share one. With ``exact`` (the flag that chose the name) a taken name is an error.
    """
    for k in range(1, 10_000):
        name = base if k == 1 else f"{base}-{k}"
        try:
            (root.path / name).mkdir()
        except FileExistsError:
            if exact:
                raise WorkbenchError(f"{root.path / name} already exists; pass another {exact}") from None
            continue
        root.adopt(name, "dir")  # made by this mkdir, so provably the workbench's
        return root.path / name
    raise WorkbenchError(f"{root.path / base}-2 to -9999 are all taken; pass another id")


@contextlib.contextmanager
def locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); yields False if not blocking and held elsewhere.

    ``flock`` locks belong to an open file, so this excludes other threads as well as other processes.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def copy_checkpoints(src: Path, dst: Path) -> bool:
    """Copy a pretraining ``--out`` folder ``src`` to ``dst`` (new) if it holds a ``checkpoint-*``; whether it did.

    Checkpoint files are hard-linked where the filesystem allows (they are written once, atomically,
    and never changed in place); the rest (``metrics.jsonl``, appended to) is copied, so continuing
    in ``dst`` never changes ``src``.
    """
    if not any(p.is_dir() for p in src.glob("checkpoint-*")):
        return False

    def link_or_copy(a: str, b: str) -> None:
        if Path(a).relative_to(src).parts[0].startswith("checkpoint-"):
            try:
                os.link(a, b)
                return
            except OSError:  # another filesystem, or no hard links there
                pass
        shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)
    return True
