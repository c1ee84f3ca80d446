"""Configuration dataclasses shared by the CLI, the notebooks' `parameters` cells and papermill.

Every field has help text (``metadata["help"]``) and ``__post_init__`` validates it, so a bad
value fails with a one-line :class:`WorkbenchError` wherever it came from. Defaults describe a
run that finishes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import WorkbenchError

__all__ = [
    "DataConfig",
    "MaskingConfig",
    "LoopConfig",
    "TrainConfig",
    "AttentionConfig",
    "FinetuneConfig",
    "ProbeConfig",
    "SlurmConfig",
    "ATTENTIONS",
    "OBJECTIVES",
    "PRECISIONS",
    "PRESET_NAMES",
    "SCHEDULES",
    "TRACKERS",
    "config_from_dict",
    "config_fields",
    "coerce_value",
    "parse_lr_grid",
    "parse_sbatch_flags",
]

OBJECTIVES = ("nsp", "sop", "mlm")
PRECISIONS = ("auto", "bf16", "fp32")
ATTENTIONS = ("auto", "sdpa", "eager")
SCHEDULES = ("linear", "one_cycle")
TRACKERS = ("tensorboard", "wandb", "mlflow")  # --report-to (workbench.training.trackers)
PRESET_NAMES = ("tiny", "mini", "small", "medium", "base")  # sizes in workbench.training.model.PRESETS
C = TypeVar("C")


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise WorkbenchError(message)


def _check_finite(config: Any) -> None:
    """Refuse an infinite or NaN float field (``--lr inf``, ``--epochs 1e309``) before any range check."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            default = f.default if f.default is not dataclasses.MISSING else None
            _check(False, f"{f.name} {value} is not a finite number; pass a finite value such as "
                          f"--{f.name.replace('_', '-')} {default:g}")


def _check_report_to(value: str) -> None:
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    bad = [n for n in names if n not in (*TRACKERS, "none")]
    _check(not bad, f"report_to {value!r}: {', '.join(bad)} is not one of {', '.join(TRACKERS)} or none; "
                    "pass e.g. --report-to tensorboard,wandb")
    _check("none" not in names or names == ["none"], f"report_to {value!r} mixes none with trackers; pass one or the other")


@dataclass
class DataConfig:
    """Where the corpus comes from and how pretraining examples are built from it."""

    corpus: str = _help(
        "Corpus: `builtin:wikipedia`, a file or folder (.txt/.jsonl/.csv/.tsv/.parquet or a "
        "Wikipedia .xml/.xml.bz2 dump), a dataset saved with `save_to_disk`, or a hub name "
        "`name[:config]` when online.",
        "builtin:wikipedia",
    )
    text_column: str = _help("Text column for .jsonl/.csv/.tsv/.parquet and datasets.", "text")
    tokenizer: str = _help(
        "Tokenizer: `train` (a new WordPiece on this corpus, as BERT did; an 8k vocab makes a small "
        "model's step about twice as fast as a 30k one), `builtin:minilm`, a local dir or a hub name.",
        "train",
    )
    vocab_size: int = _help("Vocabulary size when training a tokenizer (`tokenizer=train`).", 8192)
    lowercase: bool = _help("Lower-case text when training a tokenizer.", True)
    objective: str = _help("Sentence objective: `nsp` (BERT), `sop` (ALBERT) or `mlm` (packed, MLM only).", "nsp")
    max_seq_length: int = _help("Tokens per example, [CLS] and [SEP]s included.", 128)
    short_seq_prob: float = _help("Probability of a shorter random target length (BERT: 0.1).", 0.1)
    dupe_factor: int = _help(
        "Passes over the corpus, each with different pairings (BERT: 10). Fresh pairings are what make "
        "NSP generalise: with 1, a small corpus's pairs are memorised and held-out NSP stays at chance.",
        10,
    )
    google_compat: bool = _help(
        "Reproduce Google's create_pretraining_data.py exactly (about 46% IsNext on Wikipedia) "
        "instead of the balanced 50/50 default.",
        False,
    )
    shard_size: int = _help(
        "Documents per shard: NotNext partners are drawn within a shard, and peak memory is bounded by it.",
        1000,
    )
    min_doc_words: int = _help("Skip documents with fewer words than this (stubs, redirects).", 50)
    max_documents: int = _help("Use at most this many documents (0 = all).", 0)
    validation_fraction: float = _help("Fraction of documents held out for evaluation (0.1 of builtin Wikipedia: ~7k pairs).", 0.1)
    errors: str = _help("Invalid UTF-8: `strict` stops with the file and byte offset, `replace` counts and goes on.", "strict")
    num_proc: int = _help("Processes for tokenizing and pair building.", 1)
    seed: int = _help("Seed for pair building and the validation split.", 12345)
    cache_dir: str = _help("Where built datasets are cached, under a key of corpus, tokenizer and settings.", "data/cache")

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(self.objective in OBJECTIVES, f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}; pass --objective nsp, sop or mlm")
        _check(self.max_seq_length >= 8, f"max_seq_length {self.max_seq_length} is too small; use 8 or more (128 is typical)")
        _check(0.0 <= self.short_seq_prob < 1.0, f"short_seq_prob {self.short_seq_prob} must be in [0, 1); BERT uses 0.1")
        _check(self.dupe_factor >= 1, f"dupe_factor {self.dupe_factor} must be 1 or more")
        _check(self.shard_size >= 2, f"shard_size {self.shard_size} must be at least 2 documents (NotNext needs another document)")
        _check(self.vocab_size >= 1, f"vocab_size {self.vocab_size} must be positive")
        _check(self.min_doc_words >= 0, f"min_doc_words {self.min_doc_words} must be 0 or more")
        _check(self.max_documents >= 0, f"max_documents {self.max_documents} must be 0 (all) or more")
        _check(0.0 <= self.validation_fraction < 0.5, f"validation_fraction {self.validation_fraction} must be in [0, 0.5)")
        _check(self.errors in ("strict", "replace"), f"errors {self.errors!r} must be `strict` or `replace`")
        _check(self.num_proc >= 1, f"num_proc {self.num_proc} must be 1 or more")


@dataclass
class MaskingConfig:
    """Dynamic MLM masking, applied at batch time."""

    mask_rate: float = _help("Fraction of (non-special) tokens to predict; 0.15 in BERT, 0.3-0.4 per Wettig et al.", 0.15)
    mask_token_prob: float = _help("Of the chosen tokens, the fraction replaced by [MASK].", 0.8)
    random_token_prob: float = _help("Of the chosen tokens, the fraction replaced by a random token (the rest are kept).", 0.1)
    whole_word: bool = _help("Mask whole words (all WordPieces of a word together).", False)
    span: bool = _help("SpanBERT-style span masking (geometric span lengths over whole words).", False)
    span_p: float = _help("Geometric parameter of span lengths (SpanBERT: 0.2).", 0.2)
    max_span_length: int = _help("Longest span in words (SpanBERT: 10).", 10)

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(0.0 < self.mask_rate < 1.0, f"mask_rate {self.mask_rate} must be between 0 and 1 (exclusive); 0.15 is BERT's")
        _check(0.0 <= self.mask_token_prob <= 1.0, f"mask_token_prob {self.mask_token_prob} must be in [0, 1]")
        _check(0.0 <= self.random_token_prob <= 1.0, f"random_token_prob {self.random_token_prob} must be in [0, 1]")
        _check(
            self.mask_token_prob + self.random_token_prob <= 1.0 + 1e-9,
            f"mask_token_prob + random_token_prob = {self.mask_token_prob + self.random_token_prob} exceeds 1; e.g. 0.8 and 0.1",
        )
        _check(0.0 < self.span_p <= 1.0, f"span_p {self.span_p} must be in (0, 1]")
        _check(self.max_span_length >= 1, f"max_span_length {self.max_span_length} must be 1 or more")

    @property
    def keep_prob(self) -> float:
        """Of the chosen tokens, the fraction left unchanged."""
        return max(0.0, 1.0 - self.mask_token_prob - self.random_token_prob)


@dataclass
class LoopConfig:
    """What pretraining and fine-tuning share: the output dir, optimisation, arithmetic, evaluation cadence and trackers.

    :class:`TrainConfig` and :class:`FinetuneConfig` inherit these fields (their flags and
    papermill parameters stay flat: ``--lr``, ``lr = ...``); the defaults and help here are
    pretraining's, and :class:`FinetuneConfig` overrides the ten whose default or help differ.
    """

    out: str = _help("Run dir for checkpoints, metrics.jsonl and eval.json.", "runs/pretrain")
    dropout: float = _help("Hidden and attention dropout; 0 as in Cramming (short runs underfit, and dropout slows a CPU step).", 0.0)
    max_steps: int = _help("Optimizer steps (NSP starts to generalise after about 100k pairs).", 3500)
    batch_size: int = _help("Examples per process per micro-step; global batch = batch_size x processes x grad_accum.", 64)
    lr: float = _help("Peak learning rate (2e-3 suits tiny, 1e-3 mini/small; ~1e-4 for base or --init).", 2e-3)
    weight_decay: float = _help("AdamW weight decay (not on biases and LayerNorm).", 0.01)
    warmup_fraction: float = _help("Fraction of max_steps spent warming up.", 0.1)
    max_grad_norm: float = _help("Clip the gradient norm to this (0 = no clipping).", 1.0)
    precision: str = _help("`auto` (bf16 on CUDA with bf16 or a CPU with AVX512-BF16/AMX, else fp32), `bf16` or `fp32`.", "auto")
    compile: bool = _help("torch.compile the encoder (minutes of compile time; pays off on long GPU runs).", False)
    seed: int = _help("Seed of initialisation, data order and masks.", 42)
    eval_every: int = _help("Evaluate on the validation split every this many steps (0 = at the end only).", 500)
    eval_batch_size: int = _help("Examples per evaluation batch.", 64)
    log_every: int = _help("Append training metrics to metrics.jsonl and call callbacks every this many steps.", 1)
    report_to: str = _help("Experiment trackers, a comma list of tensorboard, wandb, mlflow, or `none`; they log under --out "
                           "(wandb and mlflow are optional extras: pip install 'workbench[wandb]').", "tensorboard")
    progress: bool = _help("Show a progress bar.", True)

    def __post_init__(self) -> None:
        """The checks both runs share; a subclass calls this first, then checks its own fields."""
        _check_finite(self)
        _check(0.0 <= self.dropout < 1.0, f"dropout {self.dropout} must be in [0, 1); BERT uses 0.1")
        _check(self.weight_decay >= 0.0, f"weight_decay {self.weight_decay} must be 0 or more")
        _check(0.0 <= self.warmup_fraction < 1.0, f"warmup_fraction {self.warmup_fraction} must be in [0, 1)")
        _check(self.max_grad_norm >= 0.0, f"max_grad_norm {self.max_grad_norm} must be 0 (off) or more")
        _check(self.precision in PRECISIONS, f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        _check(self.log_every >= 1, f"log_every {self.log_every} must be 1 or more")
        _check_report_to(self.report_to)


@dataclass
class TrainConfig(LoopConfig):
    """A pretraining run: data, model, optimisation, evaluation and checkpoints (the shared fields: :class:`LoopConfig`)."""

    data: str = _help("Prepared dataset dir (`workbench prepare --out DIR`); empty: prepare the builtin Wikipedia default.", "")
    objective: str = _help("Sentence objective: `auto` (the data's), `nsp`, `sop` or `mlm`; must match the data.", "auto")
    preset: str = _help("Model size (Turc et al. 2019): tiny, mini, small, medium or base (tiny: the default CPU run).", "tiny")
    init: str = _help("Start from a checkpoint (dir, hub name or builtin:minilm) instead of from scratch; its size replaces --preset.", "")
    grad_accum: int = _help("Micro-steps accumulated per optimizer step.", 1)
    adam_beta1: float = _help("AdamW beta1.", 0.9)
    adam_beta2: float = _help("AdamW beta2 (0.98 as RoBERTa: steadier at high learning rates).", 0.98)
    adam_eps: float = _help("AdamW epsilon.", 1e-6)
    schedule: str = _help("LR schedule: `linear` (warm-up then linear decay to 0) or `one_cycle` (cosine up, cosine down).", "linear")
    attention: str = _help("Attention kernel: `auto` (sdpa on CUDA, where it runs fused flash kernels; eager matmul-softmax on CPU, "
                           "where sdpa's backward is slower), `sdpa` or `eager`.", "auto")
    save_every: int = _help("Checkpoint every this many steps (0 = at the end only).", 500)
    keep_checkpoints: int = _help("Keep the last this many checkpoints.", 2)
    keep_every: int = _help(
        "Also keep every checkpoint whose step is a multiple of this (0 = none), for curves over pretraining "
        "(workbench.analysis.progression); checkpoints are written every save_every steps, so keep_every = save_every keeps all.", 0)
    resume: bool = _help("Continue the run in --out from its last checkpoint (the config must match).", False)
    overwrite: bool = _help("Start over in an --out that holds a previous run or other files (other files are kept).", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.objective in ("auto", *OBJECTIVES), f"objective {self.objective!r} is not one of auto, {', '.join(OBJECTIVES)}; pass --objective auto to use the data's")
        _check(bool(self.out), "out is empty; pass --out DIR for checkpoints and metrics")
        _check(self.preset in PRESET_NAMES, f"preset {self.preset!r} is not one of {', '.join(PRESET_NAMES)}")
        _check(self.max_steps >= 1, f"max_steps {self.max_steps} must be 1 or more")
        _check(self.batch_size >= 1, f"batch_size {self.batch_size} must be 1 or more")
        _check(self.grad_accum >= 1, f"grad_accum {self.grad_accum} must be 1 or more")
        _check(self.lr > 0.0, f"lr {self.lr} must be positive; e.g. 1e-3")
        _check(0.0 <= self.adam_beta1 < 1.0 and 0.0 <= self.adam_beta2 < 1.0, f"adam betas ({self.adam_beta1}, {self.adam_beta2}) must be in [0, 1)")
        _check(self.adam_eps > 0.0, f"adam_eps {self.adam_eps} must be positive")
        _check(self.schedule in SCHEDULES, f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        _check(self.attention in ATTENTIONS, f"attention {self.attention!r} is not one of {', '.join(ATTENTIONS)}")
        _check(self.eval_every >= 0 and self.save_every >= 0, "eval_every and save_every must be 0 (at the end only) or more")
        _check(self.eval_batch_size >= 1, f"eval_batch_size {self.eval_batch_size} must be 1 or more")
        _check(self.keep_checkpoints >= 1, f"keep_checkpoints {self.keep_checkpoints} must be 1 or more")
        _check(self.keep_every >= 0, f"keep_every {self.keep_every} must be 0 (none) or more")
        _check(not (self.resume and self.overwrite), "--resume and --overwrite contradict each other; pass one")


@dataclass
class AttentionConfig:
    """Attention analysis of one checkpoint (notebook 03 and `workbench heads`)."""

    model: str = _help("Checkpoint dir, hub name or builtin:minilm.", "builtin:minilm")
    corpus: str = _help("Corpus the segments are sampled from (as DataConfig.corpus).", "builtin:wikipedia")
    num_segments: int = _help("Corpus segments for the per-head statistics (Clark et al. used 1000).", 48)
    ablation_segments: int = _help("Segments for head ablation; each head costs one pass over them.", 4)
    max_seq_length: int = _help("Tokens per segment.", 128)
    n_clusters: int = _help("Head clusters (Jensen-Shannon distance, average linkage).", 6)
    seed: int = _help("Seed of the segment sample and the ablation masks.", 0)
    sentence: str = _help("Sentence A for the bertviz views.", "The cat sat on the mat because it was warm.")
    sentence_b: str = _help("Sentence B for the bertviz views (empty: a single sentence).", "It did not want to move for the rest of the day.")
    layer: int = _help("Layer shown first in the head view and the attention map.", 2)
    head: int = _help("Head shown in the attention map.", 0)

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(self.num_segments >= 1, f"num_segments {self.num_segments} must be 1 or more")
        _check(self.ablation_segments >= 1, f"ablation_segments {self.ablation_segments} must be 1 or more")
        _check(8 <= self.max_seq_length <= 512, f"max_seq_length {self.max_seq_length} must be in [8, 512]")
        _check(self.n_clusters >= 1, f"n_clusters {self.n_clusters} must be 1 or more")
        _check(bool(self.sentence.strip()), "sentence is empty; pass a sentence for the bertviz views")
        _check(self.layer >= 0 and self.head >= 0, f"layer {self.layer} and head {self.head} must be 0 or more")


@dataclass
class ProbeConfig:
    """Frozen-encoder linear probes per layer and the by-step curve over a run's checkpoints (notebook 04)."""

    probe_seeds: int = _help("Seeds 0..N-1: each draws the labelled sample and a fresh random twin; 3 or more for a CI.", 3)
    probe_train_size: int = _help("Labelled examples per probe, a stratified sample per seed (0 = the whole train split).", 0)
    probe_max_examples: int = _help("Probe on at most this many examples per split, a stratified sample (0 = all; "
                                    "a smaller number makes a quick check).", 0)
    probe_max_length: int = _help("Tokens per text when encoding features for the probes.", 128)
    probe_batch_size: int = _help("Texts per encoder batch when computing features.", 64)
    bshift_examples: int = _help("Bigram-shift probe: at most this many sentences per split (0 = skip the probe).", 2000)
    progression_segments: int = _help("By-step curve: held-out texts per checkpoint for the head statistics.", 32)

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(self.probe_seeds >= 2, f"probe_seeds {self.probe_seeds} must be 2 or more: the comparison with the random "
                                     "twin is a CI over seeds, which needs two (3 or more for a useful one)")
        _check(self.probe_train_size >= 0, f"probe_train_size {self.probe_train_size} must be 0 (all) or more")
        _check(self.probe_max_examples >= 0, f"probe_max_examples {self.probe_max_examples} must be 0 (all) or more")
        _check(8 <= self.probe_max_length <= 512, f"probe_max_length {self.probe_max_length} must be in [8, 512]")
        _check(self.probe_batch_size >= 1, f"probe_batch_size {self.probe_batch_size} must be 1 or more")
        _check(self.bshift_examples >= 0, f"bshift_examples {self.bshift_examples} must be 0 (skip) or more")
        _check(self.progression_segments >= 1, f"progression_segments {self.progression_segments} must be 1 or more")


@dataclass
class FinetuneConfig(LoopConfig):
    """A fine-tuning run: classify single sentences or sentence pairs (`workbench finetune`).

    The fields shared with pretraining come from :class:`LoopConfig`; the ten whose default or help
    differ from pretraining's are declared again here (out, dropout, max_steps, batch_size, lr,
    warmup_fraction, seed, eval_every, eval_batch_size, log_every).
    """

    model: str = _help(
        "Checkpoint: a workbench run dir or checkpoint, builtin:minilm, a local dir or a hub name; "
        "`random:<checkpoint>` for random weights of that checkpoint's shape.",
        "builtin:minilm",
    )
    init: str = _help("`pretrained` (the checkpoint's weights) or `random` (its shape only, for baselines).", "pretrained")
    tokenizer: str = _help("Tokenizer (empty: the checkpoint's own).", "")
    task: str = _help(
        "Labelled data: builtin:rt-polarity, a .tsv/.csv/.jsonl/.parquet file, a dir of train/validation/test "
        "files, a hub name (glue/sst2, ag_news) when online, or a task of documents pretraining held out "
        "(passage -> source document): `heldout:DATA_DIR` (a prepared dataset) or `builtin:wikipedia-topics`.",
        "builtin:rt-polarity",
    )
    text_column: str = _help("Text column (empty: the first of sentence, text, sentence1, text_a, question, premise).", "")
    text_pair_column: str = _help("Second text of a pair (empty: sentence2/text_b/question2/hypothesis if present; `none`: single sentences).", "")
    label_column: str = _help("Label column (integers or class names).", "label")
    out: str = _help("Dir for results.json and predictions.tsv (empty: write nothing).", "runs/finetune")
    train_size: int = _help("Train on a stratified, seeded sample of this many examples (0 = all), for learning curves.", 0)
    validation_fraction: float = _help("Share held out for validation when the data has no validation split.", 0.1)
    test_fraction: float = _help("Share held out for testing when the data is a single split.", 0.2)
    max_validation: int = _help("Validate (early stopping) on a stratified sample of at most this many examples (0 = all).", 1000)
    split_seed: int = _help("Seed of the held-out splits: keep it fixed to compare runs on the same test set.", 0)
    max_length: int = _help("Tokens per example, [CLS] and [SEP]s included; longer texts are truncated and counted.", 128)
    epochs: float = _help("Passes over the training examples (but at least --min-steps steps).", 3.0)
    min_steps: int = _help("At least this many optimizer steps, so small training sets still converge "
                           "(early stopping waits for them too).", 50)
    max_steps: int = _help("Optimizer steps (0 = from --epochs and --min-steps).", 0)
    batch_size: int = _help("Examples per process per step.", 32)
    lr: float = _help("Peak learning rate (small BERTs: 1e-4; base: 2e-5 to 5e-5).", 1e-4)
    warmup_fraction: float = _help("Fraction of the steps spent warming up; then linear decay to 0.", 0.1)
    dropout: float = _help("Hidden, attention and classifier dropout.", 0.1)
    eval_every: int = _help("Validate every this many steps (0 = ten times per run).", 0)
    patience: int = _help("Stop after this many validations without a better accuracy, keeping the best weights (0 = never).", 3)
    eval_batch_size: int = _help("Examples per evaluation batch (sorted by length).", 128)
    group_by_length: bool = _help("Batch training examples of similar length (less padding: faster on CPU).", True)
    seed: int = _help("Seed of the classifier initialisation, the data order and the --train-size sample.", 0)
    lr_grid: str = _help(
        "Learning curves (fair protocol): learning rates every initialisation tries, the one with the best mean "
        "validation accuracy over seeds kept per (init, size). `auto`: by model width (3e-4,1e-3,3e-3 up to "
        "hidden 256, as tiny/mini; 3e-5,1e-4 above, as MiniLM); `none`: --lr only; or a list such as `1e-4,1e-3`.",
        "auto",
    )
    lr_grid_seeds: int = _help(
        "Learning curves: search the lr grid on the first this many seeds, then run the other seeds at the chosen "
        "lr only (0: the grid on every seed). Every init gets the same procedure.",
        2,
    )
    curve_min_steps: int = _help(
        "Learning curves (fair protocol): every run trains at least this many steps before early stopping may end "
        "it, the budget a random init needs to flatten its validation curve (measured in "
        "benchmarks/pretraining_gain.py).",
        300,
    )
    curve_epochs: float = _help(
        "Learning curves (fair protocol): planned passes over the labels (at least curve_min_steps steps); "
        "early stopping usually ends a run sooner, once validation stops improving.",
        20.0,
    )
    save_model: bool = _help("Also save the fine-tuned model and tokenizer to OUT/model.", False)
    log_every: int = _help("Call callbacks with training metrics every this many steps.", 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(self.model), "model is empty; pass --model builtin:minilm or a checkpoint dir")
        _check(bool(self.task), "task is empty; pass --task builtin:rt-polarity, a data file or dir")
        _check(self.init in ("pretrained", "random"), f"init {self.init!r} is not pretrained or random; pass --init random for a random baseline")
        _check(bool(self.label_column), "label_column is empty; pass --label-column NAME")
        _check(self.train_size >= 0, f"train_size {self.train_size} must be 0 (all) or more")
        _check(0.0 < self.validation_fraction < 0.5, f"validation_fraction {self.validation_fraction} must be in (0, 0.5)")
        _check(0.0 < self.test_fraction < 0.5, f"test_fraction {self.test_fraction} must be in (0, 0.5)")
        _check(self.max_validation >= 0, f"max_validation {self.max_validation} must be 0 (all) or more")
        _check(8 <= self.max_length <= 4096, f"max_length {self.max_length} must be in [8, 4096] (BERT has 512 positions)")
        _check(self.epochs > 0.0, f"epochs {self.epochs} must be positive")
        _check(self.min_steps >= 0 and self.max_steps >= 0, "min_steps and max_steps must be 0 or more")
        _check(self.batch_size >= 1 and self.eval_batch_size >= 1, "batch_size and eval_batch_size must be 1 or more")
        _check(self.lr > 0.0, f"lr {self.lr} must be positive; e.g. 1e-4")
        _check(self.eval_every >= 0 and self.patience >= 0, "eval_every and patience must be 0 or more")
        _check(self.curve_min_steps >= 0, f"curve_min_steps {self.curve_min_steps} must be 0 or more")
        _check(self.lr_grid_seeds >= 0, f"lr_grid_seeds {self.lr_grid_seeds} must be 0 (every seed) or more")
        _check(self.curve_epochs > 0.0, f"curve_epochs {self.curve_epochs} must be positive")
        if self.lr_grid not in ("auto", "none"):
            parse_lr_grid(self.lr_grid)


# sbatch flags the workbench sets itself for a sweep's job array: not overridable by --slurm-sbatch.
_SBATCH_OWN = ("array", "output", "error", "job-name", "open-mode", "signal", "wckey", "parsable")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _sbatch_name(name: Any, where: str) -> str:
    key = str(name).strip().removeprefix("--").replace("_", "-")
    _check(bool(key) and key[0].isalpha() and set(key) <= _NAME_CHARS,
           f"{where}: {name!r} is not an sbatch option name; write e.g. constraint=a100 or exclusive")
    _check(key not in _SBATCH_OWN, f"{where}: --{key} is set by the workbench for the job array; drop it")
    return key


def parse_sbatch_flags(text: str, where: str = "--slurm-sbatch") -> dict[str, str | bool]:
    """Extra sbatch flags from ``NAME=VALUE,NAME`` (a bare NAME is a flag without value, e.g. exclusive)."""
    flags: dict[str, str | bool] = {}
    for item in (s.strip() for s in text.split(",")):
        if item:
            name, eq, value = item.partition("=")
            flags[_sbatch_name(name, where)] = value.strip() if eq else True
    return flags


def _sbatch_file(path: str) -> dict[str, str | bool]:
    import yaml

    try:
        data = yaml.safe_load(open(path, encoding="utf-8"))
    except OSError as exc:
        raise WorkbenchError(f"--slurm-sbatch-file {path}: {exc.strerror}; pass a YAML file of sbatch flags") from None
    except yaml.YAMLError as exc:
        raise WorkbenchError(f"--slurm-sbatch-file {path} is not valid YAML ({type(exc).__name__}); "
                             "write one `name: value` per line, e.g. constraint: a100") from None
    if data is None:
        return {}
    _check(isinstance(data, dict) and all(isinstance(v, str | int | float | bool) for v in data.values()),
           f"--slurm-sbatch-file {path} must be a flat mapping of sbatch flags, e.g. `constraint: a100`, `exclusive: true`")
    flags: dict[str, str | bool] = {}
    for name, value in data.items():
        if value is not False:  # `exclusive: false`: the flag left out
            flags[_sbatch_name(name, f"--slurm-sbatch-file {path}")] = value if value is True else str(value)
    return flags


@dataclass
class SlurmConfig:
    """Where and how `workbench sweep --launcher slurm` runs its jobs: one SLURM job array through submitit."""

    slurm_partition: str = _help("SLURM partition of the jobs (empty: the cluster's default partition).", "")
    slurm_time: int = _help("Time limit of each job in minutes; a run that reaches it is recorded as interrupted "
                            "and re-run by --resume.", 60)
    slurm_gpus: int = _help("GPUs per job (sbatch --gpus-per-node).", 0)
    slurm_cpus: int = _help("CPUs per job (sbatch --cpus-per-task); the run's torch threads.", 2)
    slurm_mem_gb: float = _help("Memory per job in GB (0: the partition's default).", 0.0)
    slurm_account: str = _help("SLURM account to charge (empty: your default).", "")
    slurm_qos: str = _help("SLURM quality of service (empty: the default).", "")
    slurm_array_parallelism: int = _help("At most this many jobs of the array run at once (0: no limit).", 0)
    slurm_sbatch: str = _help("Extra sbatch flags, comma-separated NAME=VALUE or NAME, e.g. "
                              "constraint=a100,exclusive; override --slurm-sbatch-file.", "")
    slurm_sbatch_file: str = _help("YAML file of extra sbatch flags, one `name: value` a line "
                                   "(`constraint: a100`, `exclusive: true`).", "")

    def __post_init__(self) -> None:
        for name in ("slurm_partition", "slurm_account", "slurm_qos"):
            value = getattr(self, name)
            _check(not value or set(value) <= _NAME_CHARS | {","},
                   f"{name} {value!r} is not a SLURM name; pass letters, digits, '_', '-' or '.'")
        _check(self.slurm_time >= 1, f"slurm_time {self.slurm_time} must be 1 minute or more")
        _check(self.slurm_gpus >= 0, f"slurm_gpus {self.slurm_gpus} must be 0 or more")
        _check(self.slurm_cpus >= 1, f"slurm_cpus {self.slurm_cpus} must be 1 or more")
        _check(self.slurm_mem_gb >= 0, f"slurm_mem_gb {self.slurm_mem_gb} must be 0 (the partition's default) or more")
        _check(self.slurm_array_parallelism >= 0, f"slurm_array_parallelism {self.slurm_array_parallelism} must be 0 (no limit) or more")
        self.sbatch_flags()  # a bad flag or file: one line now, before any work

    def sbatch_flags(self) -> dict[str, str | bool]:
        """The extra sbatch flags: the YAML file's, then --slurm-sbatch's over them."""
        flags = _sbatch_file(self.slurm_sbatch_file) if self.slurm_sbatch_file else {}
        return flags | parse_sbatch_flags(self.slurm_sbatch)


def parse_lr_grid(text: str) -> list[float]:
    """Learning rates from a comma-separated list such as ``3e-4,1e-3``; all positive."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    _check(bool(values) and all(v > 0 for v in values),
           f"lr_grid {text!r} is not a list of positive learning rates; pass e.g. 3e-4,1e-3,3e-3, auto or none")
    return values


def config_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The dataclass fields of ``cls`` by name."""
    return {f.name: f for f in dataclasses.fields(cls)}


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    tp = hints[name]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if args else str
    return tp


def coerce_value(cls: type, name: str, value: Any) -> Any:
    """Convert ``value`` (often a string from a flag or YAML) to the type of field ``name``."""
    tp = _field_type(cls, name)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise WorkbenchError(f"{name}={value!r} is not a boolean; use true or false")
    if tp is int:
        if isinstance(value, bool):
            raise WorkbenchError(f"{name}={value!r} is not an integer; pass a whole number")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise WorkbenchError(f"{name}={value!r} is not an integer; pass a whole number") from None
    if tp is float:
        if isinstance(value, bool):
            raise WorkbenchError(f"{name}={value!r} is not a number; pass e.g. 0.15")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise WorkbenchError(f"{name}={value!r} is not a number; pass e.g. 0.15") from None
    if tp is str:
        if not isinstance(value, str):
            raise WorkbenchError(f"{name}={value!r} is not a string; quote it")
        return value
    return value


def config_from_dict(cls: type[C], values: dict[str, Any], *, strict: bool = True) -> C:
    """Build ``cls`` from a flat dict, coercing types; unknown keys are an error when ``strict``."""
    fields = config_fields(cls)
    unknown = sorted(set(values) - set(fields))
    if strict and unknown:
        raise WorkbenchError(
            f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; valid names: {', '.join(fields)}"
        )
    kwargs = {k: coerce_value(cls, k, v) for k, v in values.items() if k in fields}
    return cls(**kwargs)
