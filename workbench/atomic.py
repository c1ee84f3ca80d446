"""Atomic writes, the workbench's own temporary names, and the checks that a folder can be written.

A temporary's name, ``.NAME.tmp-PID.RAND+CHECK`` (``.old-`` for an owned folder being replaced),
carries a token no user picks: CHECK is a keyed hash of NAME, kind, PID and RAND. A user's file
named like a temporary (``.env.tmp-31337``, ``.thesis.old-2024``) therefore never passes for one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

from .errors import WorkbenchError, special_kind

__all__ = [
    "check_out_path",
    "check_writable_folder",
    "is_disk_full",
    "is_workbench_temp",
    "read_json_object",
    "HOST_TAG",
    "temp_host",
    "temp_name",
    "temp_pid",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)\.(?P<rand>[0-9a-f]{12})(?P<check>[0-9a-f]{16})$")
_MIN_FREE = 1 << 20  # less free space than this on a folder's device: refused before any work
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _temp_check(name: str, kind: str, pid: int, rand: str) -> str:
    return hashlib.blake2b(f"{name}\0{kind}\0{pid}\0{rand}".encode(), digest_size=8,
                           person=b"workbench-temp").hexdigest()


# The first 4 hex digits of a temporary's random part name its machine: on a filesystem that
# several machines share (SLURM jobs writing reports/), another machine's pids cannot be looked up.
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]


def temp_name(name: str, kind: str = "tmp", pid: int | None = None) -> str:
    """A fresh hidden temporary name for entry ``name`` (``kind`` tmp or old), carrying the workbench's token."""
    pid = os.getpid() if pid is None else pid
    rand = HOST_TAG + secrets.token_hex(4)
    return f".{name}.{kind}-{pid}.{rand}{_temp_check(name, kind, pid, rand)}"


def temp_pid(name: str) -> int | None:
    """The pid in a workbench temporary's name, or None if ``name`` is not one (a look-alike included)."""
    m = _TEMP.match(name)
    if m is None or _temp_check(m["name"], m["kind"], int(m["pid"]), m["rand"]) != m["check"]:
        return None
    return int(m["pid"])


def temp_host(name: str) -> str | None:
    """The machine tag of a workbench temporary's name (compare with :data:`HOST_TAG`), or None if not one."""
    m = _TEMP.match(name)
    return m["rand"][:4] if m is not None and temp_pid(name) is not None else None


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary sibling, fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(temp_name(path.name))
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a crash after the rename never leaves an empty file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8 atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """A JSON file's object, or None if it is missing, unreadable or not an object."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def check_out_path(path: str | Path, flag: str = "--out", writable: bool = False) -> Path:
    """``path`` as a Path; a WorkbenchError if it exists and is not a directory (call before any work).

    ``writable``: also refuse a folder that cannot be written (see :func:`check_writable_folder`).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        what = special_kind(path) or "a file"
        raise WorkbenchError(f"{flag} {path} is {what}, not a folder; pass a folder (new or existing) as {flag}")
    for parent in path.parents:  # a file on the way makes mkdir fail later, after the work
        if parent.exists():
            if not parent.is_dir():
                what = special_kind(parent) or "a file"
                raise WorkbenchError(f"{flag} {path}: {parent} is {what}, not a folder; pass another {flag}")
            break
    if writable:
        check_writable_folder(path, flag)
    return path


def check_writable_folder(path: str | Path, flag: str = "--out") -> None:
    """One line if folder ``path`` (or, if not made yet, the folder it would be made in) is read-only or its disk full."""
    path = Path(path).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if not os.access(existing, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "on a read-only file system" if read_only else f"{existing} is not writable by this user"
        raise WorkbenchError(f"{flag} {path} cannot be written ({why}); pass a folder you can write to as {flag}")
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return
    if free < _MIN_FREE:
        raise WorkbenchError(f"{flag} {path}: no space left on its device ({free // 1024} KiB free); "
                             f"free some space or pass another {flag}")


def is_disk_full(exc: BaseException, path: str | Path) -> bool:
    """True if ``exc``, raised while writing into ``path``, means its disk is full (by errno, or by the space left)."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    if isinstance(exc, OSError) and exc.errno is not None:  # another cause, named by its errno
        return False
    try:
        return shutil.disk_usage(path).free < _MIN_FREE
    except OSError:
        return False


def is_workbench_temp(name: str) -> bool:
    """True if ``name`` is a hidden temporary carrying the workbench's own token (a look-alike is not)."""
    return temp_pid(name) is not None
