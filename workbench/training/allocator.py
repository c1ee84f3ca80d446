"""Keep freed CPU memory in the process heap, so big tensors are not page-faulted every step.

glibc's malloc serves requests above its mmap threshold (adaptive, at most 32 MiB) with fresh
``mmap`` pages and unmaps them on ``free``, and torch's 64-byte-aligned requests do not fit back
into the free chunks that smaller ones leave. A BERT training step allocates its large
activations (MLM scores, the attention probabilities, gradients) anew each step, so every one
of their pages faults in again and a CPU step takes far longer (docs/results.md gives the
measurement). Raising the mmap threshold and never trimming the heap top keeps those pages
mapped for reuse (no faults a step in steady state).
The same cure as preloading jemalloc or tcmalloc, which Intel's PyTorch CPU guide
recommends, but applied from inside a running notebook kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

__all__ = ["heap_in_use", "retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD = 1 << 30  # only requests of 1 GiB or more still get their own mapping
_TRIM_THRESHOLD = 2**31 - 1  # (int) never give the heap top back to the kernel
_applied: bool | None = None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def heap_in_use() -> int | None:
    """Bytes of live malloc allocations (glibc's mallinfo2), or None where it is not glibc.

    Unlike RSS this falls when memory is freed, even while the heap keeps the pages: the
    measure of a phase's peak memory once :func:`retain_freed_memory` is on.
    """
    libc = _libc()
    info_fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if info_fn is None:  # glibc < 2.33
        return None
    info_fn.restype = _MallInfo2
    info = info_fn()
    return int(info.uordblks + info.hblkhd)  # heap chunks in use + mmapped chunks


def retain_freed_memory() -> bool:
    """Tune glibc malloc (once per process) to reuse freed memory; False where it is not glibc."""
    global _applied
    if _applied is not None:
        return _applied
    libc = _libc()
    try:
        _applied = libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except AttributeError:  # no mallopt: keep the defaults
        _applied = False
    return _applied
