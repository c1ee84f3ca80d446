"""Shared by the fault tests: a small real run to break things in, and CLI runs in-process with their refusal line."""

from __future__ import annotations

from pathlib import Path

from workbench import cli
from workbench.analysis import attention
from workbench.config import DataConfig, TrainConfig
from workbench.data import examples as pretraining_data
from workbench.data.corpora import iter_documents
from workbench.data.examples import prepare_dataset
from workbench.evaluation import finetuning as finetune_module
from workbench.training.pretraining import pretrain

ROOT = Path(__file__).resolve().parents[1]


def build_world(base: Path) -> dict[str, Path]:
    """In ``base``: a 10-document Wikipedia corpus, its prepared NSP data and a 2-step run with checkpoint-1 and -2."""
    docs = [doc[:12] for doc in iter_documents("builtin:wikipedia", max_documents=10)]
    corpus = base / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n")
    data, run = base / "data", base / "run"
    prepare_dataset(DataConfig(corpus=str(corpus), tokenizer="builtin:minilm", max_seq_length=32, dupe_factor=1,
                               validation_fraction=0.25, cache_dir=str(base / "cache")), out_dir=data)
    pretrain(TrainConfig(data=str(data), out=str(run), preset="tiny", max_steps=2, batch_size=4, eval_every=0,
                         save_every=1, progress=False, seed=1))
    return {"base": base, "corpus": corpus, "data": data, "run": run, "cache": base / "cache"}


def command_argv(command: str, world: dict[str, Path], out: Path, *extra: str, finetune_model: Path | None = None
                 ) -> list[str]:
    """The tiniest arguments of each command on ``world`` (finetune reads ``finetune_model``, default the run)."""
    model = finetune_model or world["run"]
    return {
        "prepare": ["prepare", "--corpus", str(world["corpus"]), "--tokenizer", "builtin:minilm",
                    "--max-seq-length", "32", "--dupe-factor", "1", "--validation-fraction", "0.25",
                    "--cache-dir", str(world["cache"])],
        "pretrain": ["pretrain", "--data", str(world["data"]), "--preset", "tiny", "--max-steps", "2",
                     "--batch-size", "4", "--eval-every", "0", "--save-every", "0", "--seed", "1", "--no-progress"],
        "heads": ["heads", "--model", str(world["run"]), "--corpus", str(world["corpus"]), "--num-segments", "4",
                  "--max-seq-length", "32"],
        "finetune": ["finetune", "--model", str(model), "--task", "builtin:rt-polarity", "--max-steps", "2",
                     "--max-length", "32", "--batch-size", "8", "--no-progress"],
        "report": ["report", "--notebooks-dir", str(ROOT / "notebooks"), "--notebooks", "01"],
    }[command] + ["--out", str(out), *extra]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``workbench ARGV`` run in-process."""
    capsys.readouterr()
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


def refused(rc: int, err: str, *fragments: str) -> str:
    """The one `error:` line of a refusal (exit 2, no traceback), checked to contain ``fragments``."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def no_work(monkeypatch) -> None:
    """Make the first step of every command's work fail loudly: a refusal must come before it."""
    def started(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(pretraining_data, "_resolve_tokenizer", started)
    monkeypatch.setattr(pretraining_data, "load_prepared", started)
    monkeypatch.setattr("workbench.training.run_setup.load_prepared", started)
    monkeypatch.setattr(attention, "load_attention_model", started)
    monkeypatch.setattr(finetune_module, "load_task", started)
    monkeypatch.setattr("workbench.report.runner.execute", started)
