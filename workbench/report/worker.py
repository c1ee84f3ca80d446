"""A sweep worker: ``python -m workbench.report.worker`` runs one report from a JSON spec on stdin.

Internal to ``workbench sweep --jobs N``; the parent has claimed the run dir and set the thread
variables in this process's environment, which the kernels inherit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import WorkbenchError
from .params import plan
from .runner import RunInterrupted, execute

__all__ = ["main"]


def main() -> int:
    """Run the spec; the exit status says how it went (0 ok, 1 failed, 2 bad spec, 128+N signal N)."""
    spec = json.loads(sys.stdin.read())
    run_dir = Path(spec["run_dir"])

    def progress(line: str) -> None:
        print(f"[{run_dir.name}] {line.strip()}", file=sys.stderr, flush=True)

    try:
        p = plan(spec["params"], spec["notebooks_dir"], spec["notebooks"])
        result = execute(p, run_dir, Path(spec["out_root"]), spec["timeout"], progress,
                         sweep=spec["sweep"], combination=spec["combination"],
                         resume_from=Path(spec["resume_from"]) if spec.get("resume_from") else None)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        return 128 + exc.signum
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
