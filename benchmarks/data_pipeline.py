"""Data pipeline benchmark: NSP build on the builtin corpus (cold, cached) and masking vs transformers.

One pass over the corpus (dupe_factor 1) with the MiniLM vocabulary: the default build
(dupe_factor 10) takes about ten times the pair-building part of it.

Each build phase runs in a fresh Python process, so its time and peak memory (RSS) are its own
and imports are not counted. Masking is measured as a ratio against
``transformers.DataCollatorForLanguageModeling`` on the same batches, in one run.

    python benchmarks/data_pipeline.py [--out benchmarks/results/data_pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

_PHASE = r"""
import json, resource, sys, time
from workbench.config import DataConfig
from workbench.data.examples import prepare_dataset
from workbench.data.tokenizer import load_tokenizer
tok = load_tokenizer("builtin:minilm")
start = time.perf_counter()
data = prepare_dataset(DataConfig(cache_dir=sys.argv[1], dupe_factor=1, validation_fraction=0.05), tokenizer=tok)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "stats": data.stats, "path": str(data.path),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _phase(cache_dir: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PHASE, cache_dir], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "data_pipeline.json")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        cold, cached = _phase(cache), _phase(cache)
        assert cached["stats"]["cached"] and not cold["stats"]["cached"]

        from datasets import load_from_disk
        from masking import bench_masking

        from workbench.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer("builtin:minilm")
        sequences = load_from_disk(str(Path(cold["path"]) / "dataset"))["train"]["input_ids"]
        masking = bench_masking(tokenizer, sequences, batch_size=args.batch_size)

    tokens = cold["stats"]["tokens"]
    result = {
        "corpus": "builtin:wikipedia",
        "objective": "nsp",
        "tokens": tokens,
        "pairs": cold["stats"]["pairs"],
        "cold_build_seconds": round(cold["seconds"], 3),
        "cold_build_tokens_per_s": round(tokens / cold["seconds"]),
        "cold_build_peak_rss_mb": round(cold["peak_rss_mb"], 1),
        "cached_load_seconds": round(cached["seconds"], 3),
        "cached_load_tokens_per_s": round(tokens / cached["seconds"]),
        "cached_load_peak_rss_mb": round(cached["peak_rss_mb"], 1),
        "masking_batch_size": args.batch_size,
        "masking_workbench_tokens_per_s": round(masking["workbench_tokens_per_s"]),
        "masking_collator_tokens_per_s": round(masking["collator_tokens_per_s"]),
        "masking_ratio_vs_collator": round(masking["ratio"], 2),
        "targets": {"cold_build_seconds": "<= 20", "cached_load_seconds": "<= 2", "masking_ratio_vs_collator": ">= 1"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result))
    for key, value in result.items():
        if key != "targets":
            print(f"{key.ljust(width)}  {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
