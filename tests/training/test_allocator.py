"""glibc malloc tuning: freed activations are reused instead of page-faulted in every step."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import torch

from workbench.training.allocator import heap_in_use, retain_freed_memory

# A training step's allocation pattern: big activations and small bookkeeping, all freed.
STEPS = """
import json, resource, sys, torch
from workbench.training.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
faults = []
for step in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    scores = torch.ones(592, 30522)  # (N, V) fp32 MLM scores, 72 MB
    probs = torch.softmax(scores, -1)
    hits = probs[:4].sum(0)
    grad = probs.to(torch.bfloat16)
    del scores, probs, grad
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")


def _faults(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@glibc
def test_retained_heap_stops_page_faults_in_steady_state():
    default, retained = _faults("default"), _faults("retain")
    assert retained["applied"] and not default["applied"]
    pages = 592 * 30522 * 4 // 4096  # one fp32 (N, V) buffer
    assert min(default["faults"][8:]) > pages  # default glibc: every step maps its buffers anew
    assert sorted(retained["faults"][8:])[4] == 0  # median of the last 8 steps: no faults
    assert sum(retained["faults"][8:]) < 0.1 * sum(default["faults"][8:])


@glibc
def test_retain_is_applied_once_and_reports_it():
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True  # idempotent: the second call changes nothing


@glibc
def test_heap_in_use_follows_live_allocations():
    before = heap_in_use()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB
    during = heap_in_use()
    del block
    after = heap_in_use()
    assert during - before >= 60 * 2**20  # counted while alive ...
    assert during - after >= 60 * 2**20  # ... and no longer once freed, even with the heap retained
