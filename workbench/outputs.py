"""The one owner of output folders: the workbench replaces or deletes only what it wrote itself.

Every folder the workbench writes into (``prepare --out``, ``pretrain --out``, ``heads --out``,
``finetune --out``, report folders, the dataset and tokenizer caches) holds a manifest,
``.workbench-manifest.json``, that records each top-level entry the workbench wrote: its kind
(file, dir or log), the command that wrote it, and its size list (files and their byte
counts; a sha256 for small files). An entry not in the manifest is foreign: it is never
replaced, deleted or appended to, whatever its name (a user's ``stats.json``, a folder named
``checkpoint-7``). A recorded entry whose content no longer matches the record (a user put
their own file under that name) counts as foreign too.

Writes are atomic: an entry is built under a hidden temporary name in the same folder and
renamed into place. A temporary's name carries the workbench's own token,
``.NAME.tmp-PID.RAND+CHECK``, whose CHECK is a keyed hash of the rest: a user's file named like
a temporary (``.env.tmp-31337``, ``.thesis.old-2024``) never passes for one and is foreign.
Temporaries of a killed process (its pid no longer runs) are removed at this folder's first
write, never by a command that refuses before writing; on a filesystem several machines share
(SLURM jobs), a temporary's name also tags its machine, and another machine's wait a day. The size list validates caches cheaply
(:meth:`OutputDir.verify` reports a truncated or missing file without reading it); a content
hash per file (xxh3) catches a same-size edit when asked to (``content=True``).

Files a user adds inside a folder of ours (``checkpoint-2/my_eval.json``) are not in its
record: when the folder is replaced they are moved into the new one, and when it is removed
they are moved aside to ``NAME.user-files``, each with a one-line note; never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .atomic import (
    HOST_TAG,
    check_out_path,
    check_writable_folder,
    is_disk_full,
    is_workbench_temp,
    read_json_object,
    temp_host,
    temp_name,
    temp_pid,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from .errors import WorkbenchError, special_kind
from .manifest import changed_content, describe, extras, identity, mismatch, same_entry

__all__ = [
    "ASIDE",
    "DiskFullError",
    "LOCK",
    "MANIFEST",
    "OutputDir",
    "check_out_path",
    "check_writable_folder",
    "is_disk_full",
    "is_workbench_temp",
    "read_json_object",
    "temp_name",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

MANIFEST = ".workbench-manifest.json"
LOCK = ".workbench-lock"  # held by a process building entries here (a cache), so another waits, then reuses
_FORMAT = 1
# Another machine's temporaries (a folder on a shared filesystem) are left alone until this old.
_FOREIGN_TEMP_AGE_S = 24 * 3600
ASIDE = ".user-files"  # suffix of the folder that keeps a user's files from an owned folder removed


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


class DiskFullError(WorkbenchError):
    """A write into an output folder failed for want of space (the folder is named)."""


def _write_failure(exc: BaseException, folder: Path, name: str) -> WorkbenchError | None:
    """The one-line error for a write of ``name`` into ``folder`` that failed for want of space or permission."""
    if is_disk_full(exc, folder):
        return DiskFullError(f"no space left on the device of {folder} while writing {name}; "
                             "free some space or pass another folder")
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WorkbenchError(f"{folder} cannot be written ({(exc.strerror or os.strerror(exc.errno)).lower()}) while writing {name}; "
                              "pass a folder you can write to")
    return None


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


class OutputDir:
    """A folder the workbench writes into, with the manifest of the entries it owns."""

    def __init__(self, path: Path, command: str, entries: dict[str, dict[str, Any]]) -> None:
        self.path, self.command = path, command
        self.entries = entries  # name -> record (kind, command, time, files/size/hashes)
        self._cleaned = False  # dead runs' temporaries are removed at the first write, not before

    # ------------------------------------------------------------------------ opening, reading
    @classmethod
    def open(cls, path: str | Path, command: str, flag: str = "--out", create: bool = True) -> OutputDir:
        """Check ``path`` (a file is refused) and read its manifest; nothing is removed until the first write.

        With ``create=False`` the folder is made at the first write, so a refused command leaves nothing.
        """
        path = check_out_path(path, flag)
        entries = cls._read_entries(path, flag)  # a damaged manifest: refused before anything changes
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return cls(path, command, entries)

    @classmethod
    def read(cls, path: str | Path, strict: bool = False) -> OutputDir:
        """A read-only view of ``path``'s manifest: nothing is created or cleaned.

        A damaged manifest reads as owning nothing, or with ``strict`` (a check before writing) is refused.
        """
        path = Path(path).expanduser()
        try:
            return cls(path, "", cls._read_entries(path))
        except WorkbenchError:
            if strict:
                raise
            return cls(path, "", {})

    def reload(self) -> None:
        """Read the manifest again (another process may have written here meanwhile)."""
        self.entries = self._read_entries(self.path)

    @staticmethod
    def _read_entries(path: Path, flag: str = "--out") -> dict[str, dict[str, Any]]:
        """The manifest's records (none without one); a damaged manifest is refused in one line.

        A process killed mid-write cannot damage it (it is replaced atomically); a user's edit or
        file of that name can, and then nothing tells the workbench's entries from the user's.
        """
        manifest = path / MANIFEST
        why = "it is not a workbench manifest"
        try:
            if not os.path.lexists(manifest):
                return {}
            if not manifest.is_file():  # a folder, a FIFO (reading one would wait), a dangling link
                raise IsADirectoryError
            data = json.loads(manifest.read_bytes().decode("utf-8"))
            entries = data["entries"]
            return {str(k): dict(v) for k, v in entries.items() if isinstance(v, dict)}
        except FileNotFoundError:
            return {}
        except IsADirectoryError:
            why = f"it is {special_kind(manifest) or ('a folder' if manifest.is_dir() else 'a broken link')}, not a file"
        except UnicodeDecodeError:
            why = "it is not UTF-8 text"
        except json.JSONDecodeError as exc:
            why = f"it is not JSON: {exc.msg} at line {exc.lineno}"
        except OSError as exc:
            why = f"it cannot be read: {exc.strerror}"
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        raise WorkbenchError(
            f"{manifest} is damaged ({why}), so workbench cannot tell what it wrote in {path} and changes nothing "
            f"there; restore that file, or pass another {flag} (moving it away makes every entry in {path} count "
            "as yours: kept, never replaced)")

    def clean_temporaries(self) -> list[str]:
        """Remove the workbench's temporaries left by processes that no longer run; returns their names.

        Only names carrying the workbench's token count; a user's look-alike is never touched; another
        machine's (the folder is on a shared filesystem) are removed only after a day.
        """
        self._cleaned = True
        if not self.path.is_dir():
            return []
        removed = []
        for p in self.path.iterdir():
            pid = temp_pid(p.name)
            if pid is None:
                continue
            if temp_host(p.name) != HOST_TAG:  # another machine's pid cannot be looked up here
                try:
                    if time.time() - p.lstat().st_mtime < _FOREIGN_TEMP_AGE_S:
                        continue
                except FileNotFoundError:
                    continue
            elif _pid_running(pid):
                continue
            _remove(p)
            removed.append(p.name)
        return sorted(removed)

    def _begin_write(self) -> None:
        """Called by every write: the command has decided to write here, so dead runs' temporaries may go."""
        if not self._cleaned:
            self.clean_temporaries()

    def owns(self, name: str) -> bool:
        """True if ``name`` was written by the workbench and is still what it wrote (or is gone).

        "Still what it wrote": the same inode (a damaged entry of ours stays ours), or for a copy
        of the folder the same content (files) or the same file names (folders, whose files
        may be damaged); a user's file put under a recorded name is foreign.
        """
        if name in (MANIFEST, LOCK) or is_workbench_temp(name):
            return True
        record = self.entries.get(name)
        if record is None:
            return False
        try:
            st = (self.path / name).lstat()
        except FileNotFoundError:
            return True
        return any(same_entry(self.path / name, st, r) for r in (record, record.get("previous") or record))

    def owned(self) -> list[str]:
        """Entries present in the folder that the workbench wrote, sorted."""
        return sorted(n for n in self.entries if (self.path / n).exists() and self.owns(n))

    def foreign(self) -> list[str]:
        """Entries present in the folder that the workbench did not write, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if not self.owns(p.name))

    def verify(self, name: str, content: bool = False) -> str | None:
        """None if owned entry ``name`` is complete as recorded, else a short phrase saying what is wrong.

        ``content``: also compare each file's content hash (reads every file; for caches).
        """
        record = self.entries.get(name)
        if record is None:
            return f"{name} was not written by workbench"
        problem = mismatch(self.path / name, record)
        if problem is None and content and record.get("kind") in ("dir", "file"):
            problem = changed_content(self.path / name, record)
        return problem

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
        self._begin_write()
        return self.path / temp_name(name)

    def commit(self, src: Path, name: str, kind: str | None = None) -> Path:
        """Rename ``src`` (a temporary in this folder) to ``name`` atomically and record it.

        An existing ``name`` must be the workbench's: a foreign one is refused, not replaced.
        The record is written before the rename (a rename keeps inode and mtime), so a process
        killed in between never leaves an entry of its own that reads as foreign; the record
        keeps the replaced entry's identity too, so that one stays ours if the rename never came.
        Files a user added inside a replaced folder of ours are moved into the new one.
        """
        self.check_writable([name])
        self._begin_write()
        kind = kind or ("dir" if src.is_dir() else "file")
        record = {**describe(src, kind), "command": self.command, "time": round(time.time(), 3),
                  "identity": identity(src.lstat(), kind)}
        final = self.path / name
        previous = self.entries.get(name)
        aside = self._set_aside(name) if previous is not None else None  # first: safe whatever happens next
        if previous is not None and os.path.lexists(final):
            record["previous"] = {k: v for k, v in previous.items() if k != "previous"}
        self._record(name, record)
        if final.is_dir() and not final.is_symlink():  # os.replace cannot replace a folder
            old = self.path / temp_name(name, "old")
            os.replace(final, old)
            os.replace(src, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if final.exists() and src.is_dir():
                final.unlink()
            os.replace(src, final)
        if aside is not None:
            self._bring_back(aside, final)
        return final

    def _set_aside(self, name: str) -> Path | None:
        """Move the files a user added inside owned folder ``name`` to a new ``NAME.user-files``; None if none."""
        record = self.entries.get(name) or {}
        added = extras(self.path / name, record) if self.owns(name) else []
        if not added:
            return None
        for k in range(1, 10_000):
            aside = self.path / (f"{name}{ASIDE}" if k == 1 else f"{name}{ASIDE}-{k}")
            try:
                aside.mkdir()  # exclusive: never into a folder that exists (a user's)
                break
            except FileExistsError:
                continue
        for rel in added:
            (aside / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path / name / rel, aside / rel)
        return aside

    def _bring_back(self, aside: Path, final: Path) -> None:
        """Move a user's files from ``aside`` into the new folder ``final`` where no file of ours has the name."""
        kept, left = [], []
        for folder, dirs, files in os.walk(aside, topdown=False):
            for n in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                rel = os.path.relpath(os.path.join(folder, n), aside)
                target = final / rel
                if final.is_dir() and not final.is_symlink() and not os.path.lexists(target):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(aside / rel, target)
                    kept.append(rel)
                else:
                    left.append(rel)
            for d in dirs:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(folder, d))  # emptied folders only
        with contextlib.suppress(OSError):
            aside.rmdir()
        if kept:
            _note(f"kept the files you added to {final} in the new {final.name}: {', '.join(sorted(kept))}")
        if left:
            _note(f"moved the files you added to {final} aside to {aside} (the new {final.name} has "
                  f"files of those names): {', '.join(sorted(left))}")

    def write_text(self, name: str, text: str, kind: str = "file") -> Path:
        """Write file ``name`` atomically and record it (``kind="log"`` for a file appended to later)."""
        tmp = self.tmp_path(name)
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            return self.commit(tmp, name, kind)
        except OSError as exc:
            if (failure := _write_failure(exc, self.path, name)) is None:
                raise
            raise failure from None
        finally:
            tmp.unlink(missing_ok=True)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as JSON to file ``name`` atomically and record it."""
        return self.write_text(name, json.dumps(obj, indent=2, default=str) + "\n")

    def replace_dir(self, name: str, build: Callable[[Path], None]) -> Path:
        """Build folder ``name`` by ``build(tmp)`` in a temporary, then swap it in atomically.

        A build that fails (a full disk included) leaves the old ``name`` as it was.
        """
        self.check_writable([name])  # before the build: a refusal costs no work
        tmp = self.tmp_path(name)
        try:
            tmp.mkdir()
            build(tmp)
            return self.commit(tmp, name, "dir")
        except Exception as exc:  # torch and safetensors report a full disk in their own exceptions
            if (failure := _write_failure(exc, self.path, name)) is None:
                raise
            raise failure from None
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
            self._record(name, {**record, **describe(path, "log"), "identity": identity(path.lstat(), "log")})

    def adopt(self, name: str, kind: str) -> None:
        """Record an existing entry as the workbench's (only for entries it provably wrote, e.g. a cache key)."""
        path = self.path / name
        self._record(name, {**describe(path, kind), "command": self.command, "time": round(time.time(), 3),
                            "identity": identity(path.lstat(), kind), "adopted": True})

    def remove(self, name: str) -> bool:
        """Delete entry ``name`` if the workbench owns it; returns whether anything was deleted.

        Files a user added inside it (a folder) are first moved aside to ``NAME.user-files``, with a note.
        """
        path = self.path / name
        if not self.owns(name) or name == MANIFEST:
            return False
        self._begin_write()
        existed = os.path.lexists(path)
        if existed:
            aside = self._set_aside(name)
            if aside is not None:
                kept = sorted(str(p.relative_to(aside)) for p in aside.rglob("*") if p.is_file() or p.is_symlink())
                _note(f"moved the files you added to {path} aside to {aside} before removing it: {', '.join(kept)}")
            doomed = self.path / temp_name(name, "old")  # rename first: the name goes at once
            os.replace(path, doomed)
            _remove(doomed)
        self._forget(name)
        return existed

    # ---------------------------------------------------------------------- builders of a cache
    @contextlib.contextmanager
    def building(self, what: str = "") -> Iterator[None]:
        """Hold the folder's build lock (``.workbench-lock``): a concurrent builder waits here, then rereads.

        The manifest is read again once the lock is held, so the caller sees what the other built.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _note(f"another workbench process is building {what or self.path}; waiting for it to finish")
            lock.acquire()
        try:
            self.reload()
            yield
        finally:
            lock.release()

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
        self._begin_write()
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
