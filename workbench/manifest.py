"""What an output folder's manifest records of an entry, and how an entry on disk is compared with it.

A record holds an entry's kind (file, dir or log), its size list (a folder's files and their byte
counts), content hashes (xxh3 per file; a sha256 for small files) and its identity (inode, and
for files the modification time).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import xxhash

__all__ = ["changed_content", "describe", "extras", "identity", "mismatch", "same_entry"]

_HASH_LIMIT = 1 << 20  # files up to 1 MiB get a sha256 in the record (kept from older manifests)


def _digest(path: Path, h: Any, block: int) -> str:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    return _digest(path, hashlib.sha256(), 1 << 16)


def _xxh3(path: Path) -> str:
    return _digest(path, xxhash.xxh3_128(), 1 << 20)


def describe(path: Path, kind: str) -> dict[str, Any]:
    """The record of an entry: its files' sizes and content hashes (dirs), or size and hashes (files)."""
    if kind == "dir":
        listed = [p for p in sorted(path.rglob("*")) if p.is_file()]
        return {"kind": kind, "files": {str(p.relative_to(path)): p.stat().st_size for p in listed},
                "xxh3": {str(p.relative_to(path)): _xxh3(p) for p in listed}}
    if kind == "log":  # appended to while a run goes on: its start is what stays the same
        with open(path, "rb") as f:
            head = f.read(_HASH_LIMIT)
        return {"kind": kind, "prefix_size": len(head), "prefix_sha256": hashlib.sha256(head).hexdigest()}
    size = path.stat().st_size
    record: dict[str, Any] = {"kind": kind, "size": size, "xxh3": _xxh3(path)}
    if size <= _HASH_LIMIT:
        record["sha256"] = _sha256(path)
    return record


def changed_content(path: Path, record: dict[str, Any]) -> str | None:
    """Which file of entry ``path`` differs from its recorded content hash (a same-size edit), or None."""
    hashes = record.get("xxh3")
    if isinstance(hashes, str):  # a file
        return None if _xxh3(path) == hashes else f"{path.name} differs from what was written"
    for rel, digest in (hashes or {}).items():
        if _xxh3(path / rel) != digest:
            return f"{path.name}/{rel} differs from what was written"
    return None


def extras(path: Path, record: dict[str, Any]) -> list[str]:
    """Files and links inside owned folder ``path`` that its record does not list: a user's additions."""
    if record.get("kind") != "dir" or path.is_symlink() or not path.is_dir():
        return []
    known = set(record.get("files") or {}) | set((record.get("previous") or {}).get("files") or {})
    found = []
    for folder, dirs, files in os.walk(path):  # links are not followed: a linked folder is one entry
        for n in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rel = os.path.relpath(os.path.join(folder, n), path)
            if rel not in known:
                found.append(rel)
    return sorted(found)


def identity(st: os.stat_result, kind: str) -> list[int]:
    """Inode (and for files the modification time): a file of ours rewritten in place differs.

    Folders and logs are identified by inode alone: files inside a folder of ours may be added,
    truncated or lost (it stays ours, and :meth:`OutputDir.verify` says what is wrong), and a
    log grows.
    """
    return [st.st_ino, st.st_mtime_ns] if kind == "file" else [st.st_ino]


def mismatch(path: Path, record: dict[str, Any]) -> str | None:
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


def same_entry(path: Path, st: os.stat_result, record: dict[str, Any]) -> bool:
    kind = record.get("kind", "")
    if identity(st, kind) == record.get("identity"):
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
    return kind == "file" and mismatch(path, record) is None

