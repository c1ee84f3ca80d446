"""The one owner of output folders: the workbench replaces or deletes only what it wrote itself.

Every folder the workbench writes into (``prepare --out``, ``pretrain --out``, ``heads --out``,
``finetune --out``, report folders, the dataset and tokenizer caches) holds a manifest,
``.workbench-manifest.json``, that records each top-level entry the workbench wrote: its kind
(file, dir or log), the command that wrote it, and its size list (files and their byte
counts; a sha256 for small files). An entry not in the manifest is foreign: it is never
replaced, deleted or appended to, whatever its name (a user's ``stats.json``, a folder named
``checkpoint-7``). A recorded entry whose content no longer matches the record (a user put
their own file under that name) counts as foreign too.

Writes are atomic: an entry is built under a hidden temporary name in the same folder
(``.NAME.tmp-PID.HEX``) and renamed into place. Temporaries of a killed process (its pid no
longer runs) are removed by the next :meth:`OutputDir.open`; on a filesystem several machines
share (SLURM jobs), HEX names the machine, and another machine's temporaries wait a day. The size list also validates
caches cheaply: :meth:`OutputDir.verify` reports a truncated or missing file without reading it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import WorkbenchError

__all__ = [
    "MANIFEST",
    "OutputDir",
    "check_out_path",
    "is_workbench_temp",
    "read_json_object",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

MANIFEST = ".workbench-manifest.json"
_FORMAT = 1
# Hidden temporaries: ".NAME.tmp-PID" (older workbench versions), ".NAME.tmp-PID.HEX", or
# ".NAME.tmp-PID.HOSTRAND": 8 hex digits naming the machine, then 8 random ones.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:\.(?P<tag>[0-9a-f]+))?$")
# A folder on a filesystem that several machines share (SLURM jobs writing reports/): another
# machine's pids cannot be looked up here, so its temporaries are left alone until this old.
_HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_FOREIGN_TEMP_AGE_S = 24 * 3600
_HASH_LIMIT = 1 << 20  # files up to 1 MiB get a sha256 in the record; larger ones a size only


# ------------------------------------------------------------------------------ atomic writes
def _temp_name(name: str, kind: str = "tmp") -> str:
    return f".{name}.{kind}-{os.getpid()}.{_HOST_TAG}{secrets.token_hex(4)}"


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary sibling, fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(_temp_name(path.name))
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


def check_out_path(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a Path; a WorkbenchError if it exists and is not a directory (call before any work)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise WorkbenchError(f"{flag} {path} is a file, not a folder; pass a folder (new or existing) as {flag}")
    for parent in path.parents:  # a file on the way makes mkdir fail later, after the work
        if parent.exists():
            if not parent.is_dir():
                raise WorkbenchError(f"{flag} {path}: {parent} is a file, not a folder; pass another {flag}")
            break
    return path


def is_workbench_temp(name: str) -> bool:
    """True if ``name`` is a hidden temporary in the workbench's own naming."""
    return _TEMP.match(name) is not None


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- records
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def _describe(path: Path, kind: str) -> dict[str, Any]:
    """The record of an entry: its files' sizes (dirs), or size and sha256 (files)."""
    if kind == "dir":
        files = {str(p.relative_to(path)): p.stat().st_size
                 for p in sorted(path.rglob("*")) if p.is_file()}
        return {"kind": kind, "files": files}
    if kind == "log":  # appended to while a run goes on: its start is what stays the same
        with open(path, "rb") as f:
            head = f.read(_HASH_LIMIT)
        return {"kind": kind, "prefix_size": len(head), "prefix_sha256": hashlib.sha256(head).hexdigest()}
    size = path.stat().st_size
    record: dict[str, Any] = {"kind": kind, "size": size}
    if size <= _HASH_LIMIT:
        record["sha256"] = _sha256(path)
    return record


def _identity(st: os.stat_result, kind: str) -> list[int]:
    """Inode (and for files the modification time): a file of ours rewritten in place differs.

    Folders and logs are identified by inode alone: files inside a folder of ours may be added,
    truncated or lost (it stays ours, and :meth:`OutputDir.verify` says what is wrong), and a
    log grows.
    """
    return [st.st_ino, st.st_mtime_ns] if kind == "file" else [st.st_ino]


def _mismatch(path: Path, record: dict[str, Any]) -> str | None:
    """Why ``path`` no longer matches ``record`` (one short phrase), or None if it does."""
    kind = record.get("kind")
    if not path.exists():
        return f"{path.name} is missing"
    if kind == "log":
        return None if path.is_file() else f"{path.name} is not a file"
    if kind == "dir":
        if not path.is_dir():
            return f"{path.name} is not a folder"
        for rel, size in record.get("files", {}).items():
            f = path / rel
            if not f.is_file():
                return f"{path.name}/{rel} is missing"
            if f.stat().st_size != size:
                return f"{path.name}/{rel} has {f.stat().st_size} bytes, {size} were written"
        return None
    if not path.is_file():
        return f"{path.name} is not a file"
    size = path.stat().st_size
    if size != record.get("size"):
        return f"{path.name} has {size} bytes, {record.get('size')} were written"
    if "sha256" in record and _sha256(path) != record["sha256"]:
        return f"{path.name} differs from what was written"
    return None


def _same_entry(path: Path, st: os.stat_result, record: dict[str, Any]) -> bool:
    kind = record.get("kind", "")
    if _identity(st, kind) == record.get("identity"):
        return True
    if kind == "dir":
        files = record.get("files") or {}
        return path.is_dir() and bool(files) and all((path / rel).is_file() for rel in files)
    if kind == "log":  # a copy, since grown: it still starts with what was recorded
        n = record.get("prefix_size", 0)
        if n <= 0 or not path.is_file() or path.stat().st_size < n:
            return False
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(n)).hexdigest() == record.get("prefix_sha256")
    return kind == "file" and _mismatch(path, record) is None


class OutputDir:
    """A folder the workbench writes into, with the manifest of the entries it owns."""

    def __init__(self, path: Path, command: str, entries: dict[str, dict[str, Any]]) -> None:
        self.path, self.command = path, command
        self.entries = entries  # name -> record (kind, command, time, files/size/sha256)

    # ------------------------------------------------------------------------ opening, reading
    @classmethod
    def open(cls, path: str | Path, command: str, flag: str = "--out", create: bool = True) -> OutputDir:
        """Check ``path`` (a file is refused), read its manifest, and remove dead runs' temporaries.

        With ``create=False`` the folder is made at the first write, so a refused command leaves nothing.
        """
        path = check_out_path(path, flag)
        if create:
            path.mkdir(parents=True, exist_ok=True)
        out = cls(path, command, cls._read_entries(path))
        out.clean_temporaries()
        return out

    @classmethod
    def read(cls, path: str | Path) -> OutputDir:
        """A read-only view of ``path``'s manifest: nothing is checked, created or cleaned."""
        path = Path(path).expanduser()
        return cls(path, "", cls._read_entries(path))

    @staticmethod
    def _read_entries(path: Path) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((path / MANIFEST).read_text())
            entries = data["entries"]
            return {str(k): dict(v) for k, v in entries.items() if isinstance(v, dict)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            # A damaged manifest (killed mid-rename cannot do this; a user edit can): owning
            # nothing is the safe reading, so nothing here is replaced or deleted.
            return {}

    def clean_temporaries(self) -> list[str]:
        """Remove hidden temporaries left by processes that no longer run; returns their names.

        Another machine's temporaries (the folder is on a shared filesystem) are removed only after a day.
        """
        if not self.path.is_dir():
            return []
        removed = []
        for p in self.path.iterdir():
            m = _TEMP.match(p.name)
            if not m:
                continue
            tag = m.group("tag") or ""
            if len(tag) == 16 and tag[:8] != _HOST_TAG:
                try:
                    if time.time() - p.lstat().st_mtime < _FOREIGN_TEMP_AGE_S:
                        continue
                except FileNotFoundError:
                    continue
            elif _pid_running(int(m.group("pid"))):
                continue
            _remove(p)
            removed.append(p.name)
        return sorted(removed)

    def owns(self, name: str) -> bool:
        """True if ``name`` was written by the workbench and is still what it wrote (or is gone).

        "Still what it wrote": the same inode (a damaged entry of ours stays ours), or for a copy
        of the folder the same content (files) or the same file names (folders, whose files
        may be damaged); a user's file put under a recorded name is foreign.
        """
        if name == MANIFEST or is_workbench_temp(name):
            return True
        record = self.entries.get(name)
        if record is None:
            return False
        try:
            st = (self.path / name).lstat()
        except FileNotFoundError:
            return True
        return any(_same_entry(self.path / name, st, r) for r in (record, record.get("previous") or record))

    def owned(self) -> list[str]:
        """Entries present in the folder that the workbench wrote, sorted."""
        return sorted(n for n in self.entries if (self.path / n).exists() and self.owns(n))

    def foreign(self) -> list[str]:
        """Entries present in the folder that the workbench did not write, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if not self.owns(p.name))

    def verify(self, name: str) -> str | None:
        """None if owned entry ``name`` is complete as recorded, else a short phrase saying what is wrong."""
        record = self.entries.get(name)
        if record is None:
            return f"{name} was not written by workbench"
        return _mismatch(self.path / name, record)

    def check_writable(self, names: Iterable[str], hint: str = "") -> None:
        """Refuse (one line) if any of ``names`` exists in the folder and is foreign."""
        clash = [n for n in names if os.path.lexists(self.path / n) and not self.owns(n)]
        if clash:
            shown = ", ".join(clash[:3]) + (", ..." if len(clash) > 3 else "")
            raise WorkbenchError(
                f"{self.path} holds {shown}, which workbench did not write (or which changed since) and "
                "will not replace; "
                f"move {'it' if len(clash) == 1 else 'them'} away or pass another {hint or '--out'}"
            )

    # ---------------------------------------------------------------------------------- writing
    def tmp_path(self, name: str) -> Path:
        """A fresh hidden temporary path in the folder for building entry ``name`` (folder created)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / _temp_name(name)

    def commit(self, src: Path, name: str, kind: str | None = None) -> Path:
        """Rename ``src`` (a temporary in this folder) to ``name`` atomically and record it.

        An existing ``name`` must be the workbench's: a foreign one is refused, not replaced.
        The record is written before the rename (a rename keeps inode and mtime), so a process
        killed in between never leaves an entry of its own that reads as foreign; the record
        keeps the replaced entry's identity too, so that one stays ours if the rename never came.
        """
        self.check_writable([name])
        kind = kind or ("dir" if src.is_dir() else "file")
        record = {**_describe(src, kind), "command": self.command, "time": round(time.time(), 3),
                  "identity": _identity(src.lstat(), kind)}
        final = self.path / name
        previous = self.entries.get(name)
        if previous is not None and os.path.lexists(final):
            record["previous"] = {k: v for k, v in previous.items() if k != "previous"}
        self._record(name, record)
        if final.is_dir() and not final.is_symlink():  # os.replace cannot replace a folder
            old = self.path / _temp_name(name, "old")
            os.replace(final, old)
            os.replace(src, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if final.exists() and src.is_dir():
                final.unlink()
            os.replace(src, final)
        return final

    def write_text(self, name: str, text: str, kind: str = "file") -> Path:
        """Write file ``name`` atomically and record it (``kind="log"`` for a file appended to later)."""
        tmp = self.tmp_path(name)
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            return self.commit(tmp, name, kind)
        finally:
            tmp.unlink(missing_ok=True)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as JSON to file ``name`` atomically and record it."""
        return self.write_text(name, json.dumps(obj, indent=2, default=str) + "\n")

    def replace_dir(self, name: str, build: Callable[[Path], None]) -> Path:
        """Build folder ``name`` by ``build(tmp)`` in a temporary, then swap it in atomically."""
        self.check_writable([name])  # before the build: a refusal costs no work
        tmp = self.tmp_path(name)
        try:
            tmp.mkdir()
            build(tmp)
            return self.commit(tmp, name, "dir")
        finally:
            _remove(tmp)

    def claim(self, name: str) -> Path:
        """Make ``name`` a log of the workbench's (created empty if missing), to be appended to later."""
        self.check_writable([name])
        path = self.path / name
        if not path.is_file():  # an existing one passed check_writable: it is ours already
            self.write_text(name, "", kind="log")
        return path

    def refresh(self, name: str) -> None:
        """Re-record owned log ``name`` as it is now (its start), so a copy of the folder stays ours."""
        path = self.path / name
        record = self.entries.get(name)
        if record is not None and record.get("kind") == "log" and path.is_file() and self.owns(name):
            self._record(name, {**record, **_describe(path, "log"), "identity": _identity(path.lstat(), "log")})

    def adopt(self, name: str, kind: str) -> None:
        """Record an existing entry as the workbench's (only for entries it provably wrote, e.g. a cache key)."""
        path = self.path / name
        self._record(name, {**_describe(path, kind), "command": self.command, "time": round(time.time(), 3),
                            "identity": _identity(path.lstat(), kind), "adopted": True})

    def remove(self, name: str) -> bool:
        """Delete entry ``name`` if the workbench owns it; returns whether anything was deleted."""
        path = self.path / name
        if not self.owns(name) or name == MANIFEST:
            return False
        existed = os.path.lexists(path)
        if existed:
            doomed = self.path / _temp_name(name, "old")  # rename first: the name goes at once
            os.replace(path, doomed)
            _remove(doomed)
        self._forget(name)
        return existed

    # --------------------------------------------------------------------------- the manifest
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock on the folder itself: concurrent writers merge their records, none is lost.
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _update(self, change: Callable[[dict[str, dict[str, Any]]], None]) -> None:
        with self._locked():
            entries = self._read_entries(self.path)
            change(entries)
            write_json_atomic(self.path / MANIFEST, {"format": _FORMAT, "entries": entries})
            self.entries = entries

    def _record(self, name: str, record: dict[str, Any]) -> None:
        self._update(lambda entries: entries.__setitem__(name, record))

    def _forget(self, name: str) -> None:
        self._update(lambda entries: entries.pop(name, None))

    def __repr__(self) -> str:
        return f"OutputDir({str(self.path)!r}, owned={self.owned()}, foreign={self.foreign()})"
