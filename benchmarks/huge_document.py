"""One huge document: `workbench prepare --objective mlm` on a generated one-line corpus.

A one-line .txt is one document however large; building it must stay linear in its length.
The corpus is real text: the builtin Wikipedia sentences in a seeded random order, repeated up
to each size, on one line. Each build runs in a fresh process (the `workbench prepare` command)
and reports wall seconds (imports included, as a user waits), CPU seconds after the imports
(user + system: less sensitive than wall time to other jobs on the machine), `build_seconds`
and peak RSS. The baseline is the smallest size: CPU seconds per MB at each size as a ratio of
the smallest size's (1.0 = linear).

    python benchmarks/huge_document.py [--sizes 10 50] [--tokenizers builtin:minilm train]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

_PHASE = r"""
import json, resource, sys, time
start = time.perf_counter()
import workbench.cli, workbench.evaluation.finetuning, workbench.data.examples, workbench.report  # imports apart
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
imported, cpu_imported = time.perf_counter(), cpu()
code = workbench.cli.main(sys.argv[1:])
print(json.dumps({"code": code, "wall_seconds": time.perf_counter() - start, "import_seconds": imported - start,
                  "cpu_seconds": cpu() - cpu_imported, "import_cpu_seconds": cpu_imported,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _corpus(path: Path, megabytes: float, seed: int = 0) -> None:
    from workbench.data.corpora import iter_documents

    sentences = [s for doc in iter_documents("builtin:wikipedia") for s in doc]
    rng, out, size = random.Random(seed), [], 0
    while size < megabytes * 1e6:
        out.append(sentences[rng.randrange(len(sentences))])
        size += len(out[-1]) + 1
    path.write_text(" ".join(out) + "\n", encoding="utf-8")


def _build(corpus: Path, tokenizer: str, work: Path) -> dict:
    out = work / f"out-{corpus.stem}-{tokenizer.replace(':', '-')}"
    argv = ["prepare", "--corpus", str(corpus), "--objective", "mlm", "--tokenizer", tokenizer,
            "--out", str(out), "--cache-dir", str(work / "cache")]
    proc = subprocess.run([sys.executable, "-c", _PHASE, *argv], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stats = json.loads((out / "stats.json").read_text())
    return {**result, "build_seconds": stats["build_seconds"], "tokens": stats["tokens"],
            "segments": stats["pairs"], "note": [w for w in stats["warnings"] if "one document" in w]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[10.0, 50.0], help="Corpus sizes in MB.")
    parser.add_argument("--tokenizers", nargs="+", default=["builtin:minilm", "train"])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "huge_document.json")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for megabytes in sorted(args.sizes):
            corpus = work / f"one-line-{megabytes:g}mb.txt"
            _corpus(corpus, megabytes)
            for tokenizer in args.tokenizers:
                rows.append({"megabytes": megabytes, "tokenizer": tokenizer, **_build(corpus, tokenizer, work)})
    for row in rows:
        base = next(r for r in rows if r["tokenizer"] == row["tokenizer"])  # the smallest size
        row["cpu_per_mb_vs_smallest"] = (row["cpu_seconds"] / row["megabytes"]) / (base["cpu_seconds"] / base["megabytes"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{'MB':>5} {'tokenizer':>15} {'wall s':>8} {'CPU s':>7} {'build s':>8} {'peak RSS MB':>12} "
          f"{'CPU/MB vs smallest':>19}   (CPU after imports; wall with them)")
    for r in rows:
        print(f"{r['megabytes']:>5g} {r['tokenizer']:>15} {r['wall_seconds']:>8.1f} {r['cpu_seconds']:>7.1f} "
              f"{r['build_seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} {r['cpu_per_mb_vs_smallest']:>19.2f}")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
