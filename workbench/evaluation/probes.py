"""Frozen-encoder probes: a linear classifier on each layer's mean-pooled output.

After Conneau et al. (2018, "What you can cram into a single vector", SentEval) and Tenney et
al. (2019): an encoder is frozen, every layer's hidden states (the embeddings output is layer 0)
are mean-pooled over the tokens of each text, and a multinomial logistic regression is fitted per
layer. Features are computed once per (model, split); the regression is convex, fitted with
L-BFGS on standardised features, its L2 strength chosen on the validation split, so a probe takes
seconds where a fine-tune takes minutes.

Seeds vary what a seed should vary: the labelled sample (``train_size`` examples drawn per seed,
the same for every model) and the weights of a ``random:`` model (one random twin per seed).
The headline number of a (model, seed) is the test accuracy of the layer with the best validation
accuracy, so every model gets the same selection budget. :func:`bigram_shift` makes a
SentEval-style probing task (BShift) from raw text, and :func:`probe_bigram_shift` answers it as
a :class:`~workbench.evaluation.results.ProbeGain` read against chance. The probes take their settings from a
:class:`~workbench.config.ProbeConfig` (notebook 04 builds one from its parameters).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import ProbeConfig
from ..data.corpora import split_sentences
from ..errors import WorkbenchError
from ..shortnames import label_for
from ..training.engine import resolve_attention
from .finetuning import load_classifier
from .results import ProbeGain
from .splits import TaskData, stratified_sample
from .stats import at_chance, gain_sentence, gain_verdict, mean_ci, paired_difference

__all__ = [
    "BSHIFT_CHANCE",
    "L2_GRID",
    "LayerFeatures",
    "Probe",
    "at_chance",
    "best_layer",
    "bigram_shift",
    "cap_examples",
    "encode_layers",
    "fit_probe",
    "gain_sentence",
    "headline_metrics",
    "headline_table",
    "layer_features",
    "load_encoder",
    "probe_bigram_shift",
    "probe_gain",
    "probe_layers",
    "probe_models",
    "probe_seeds",
    "probe_summary",
]

# Penalty on the mean cross-entropy: lambda / 2 * ||W||^2, strongest first (ties go to it). On the
# builtin held-out task 1e-4 was never chosen (tiny checkpoint, its twins, BShift), and the weakest
# penalty is the slowest fit, so the grid stops at 1e-3.
L2_GRID = (1.0, 0.1, 1e-2, 1e-3)
BSHIFT_CHANCE = 0.5  # bigram shift's two classes are balanced
Callback = Callable[[str], None]


@dataclass
class LayerFeatures:
    """Mean-pooled hidden states of one model: ``splits[name]`` is (layers + 1, N, H) float32."""

    model: str
    splits: dict[str, torch.Tensor]
    labels: dict[str, np.ndarray]  # (N,) class index per split

    @property
    def n_layers(self) -> int:
        """Layers including the embeddings output (layer 0)."""
        return next(iter(self.splits.values())).shape[0]


# ---------------------------------------------------------------------------------- features
def load_encoder(spec: str, seed: int = 0, attention: str = "auto") -> tuple[torch.nn.Module, Any]:
    """The frozen encoder of ``spec`` in eval mode; ``random:SPEC`` draws its weights from ``seed``.

    ``attention="eager"`` for a model whose attention weights are read (head statistics).
    """
    torch.manual_seed(seed)  # a random twin's weights, as finetune draws them (load_classifier)
    model, tok, _ = load_classifier(spec, ["0", "1"], dropout=0.0)
    encoder = model.base_model  # BertModel: no classifier head
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder.set_attn_implementation(resolve_attention(attention, device))
    return encoder.to(device).eval().requires_grad_(False), tok


@torch.no_grad()
def encode_layers(encoder: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int = 128,
                  batch_size: int = 64) -> torch.Tensor:
    """Mean over each text's tokens ([CLS] and [SEP] included, padding not) of every layer: (L + 1, N, H)."""
    if not texts:
        raise WorkbenchError("no texts to encode; pass a task with examples in every split")
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, verbose=False)
    ids = enc["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths together: little padding
    device = next(encoder.parameters()).device
    out: torch.Tensor | None = None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(ids[i]) for i in rows)
        batch = torch.full((len(rows), width), int(tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            batch[r, :len(ids[i])], mask[r, :len(ids[i])] = torch.tensor(ids[i]), 1
        hidden = encoder(input_ids=batch.to(device), attention_mask=mask.to(device),
                         output_hidden_states=True).hidden_states  # L + 1 of (B, T, H)
        m = mask.to(device).unsqueeze(-1).float()  # (B, T, 1)
        pooled = torch.stack([(h.float() * m).sum(1) / m.sum(1) for h in hidden])  # (L + 1, B, H)
        if out is None:
            out = torch.empty((pooled.shape[0], len(order), pooled.shape[2]), dtype=torch.float32)
        out[:, torch.from_numpy(rows)] = pooled.cpu()
    assert out is not None
    return out


def layer_features(encoder: torch.nn.Module, tokenizer: Any, data: TaskData, max_length: int = 128,
                   batch_size: int = 64, name: str = "") -> LayerFeatures:
    """Every split of ``data`` encoded once by a frozen encoder; labels as class indices (-1: unseen in train)."""
    if data.pairs:
        raise WorkbenchError(f"task {data.name!r} has sentence pairs; the probes encode single texts: pass a "
                             "single-text task (or --text-pair-column none)")
    index = {label: i for i, label in enumerate(data.labels)}
    splits, labels = {}, {}
    for split in ("train", "validation", "test"):
        frame = data.splits[split]
        splits[split] = encode_layers(encoder, tokenizer, frame["text"].tolist(), max_length, batch_size)
        labels[split] = np.array([index.get(v, -1) for v in frame["label"]], dtype=np.int64)
    return LayerFeatures(name, splits, labels)


# ------------------------------------------------------------------------------------ probes
def _fit(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, l2: float, max_iter: int) -> None:
    """Multinomial logistic regression on (N, H) features by L-BFGS, in place from W (H, C), b (C,)."""
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-5, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)


@contextmanager
def _one_thread() -> Iterator[None]:
    # The probe's matrices are small (N x H, H x C): threads only add overhead, and on a shared
    # 2-core machine a 2-thread op waits for a busy core (8x slower measured under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class Probe:
    """A fitted linear probe: standardisation (mean, std: (H,)), weights W (H, C), b (C,), its L2 and validation accuracy."""

    mean: torch.Tensor
    std: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    l2: float
    validation_accuracy: float

    def predict(self, features: torch.Tensor) -> np.ndarray:
        """Class index per row of (N, H) features."""
        return (((features.double() - self.mean) / self.std) @ self.w + self.b).argmax(1).numpy()


def fit_probe(train_x: torch.Tensor, train_y: np.ndarray, val_x: torch.Tensor, val_y: np.ndarray,
              n_classes: int, l2_grid: Sequence[float] = L2_GRID, max_iter: int = 100) -> Probe:
    """Fit on train for each L2 strength (strongest first, each warm-starting the next); keep the best on validation."""
    mean, std = train_x.double().mean(0), train_x.double().std(0).clamp_min(1e-6)  # (H,) standardise on train
    x, y = (train_x.double() - mean) / std, torch.from_numpy(train_y)
    vx, vy = (val_x.double() - mean) / std, torch.from_numpy(val_y)
    w = torch.zeros((x.shape[1], n_classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    best: Probe | None = None
    with _one_thread():
        for l2 in sorted(l2_grid, reverse=True):
            _fit(x, y, w, b, l2, max_iter)
            with torch.no_grad():
                acc = float(((vx @ w + b).argmax(1) == vy).double().mean())
            if best is None or acc > best.validation_accuracy:  # ties: the stronger penalty
                best = Probe(mean, std, w.detach().clone(), b.detach().clone(), l2, acc)
    if best is None:
        raise WorkbenchError("l2_grid is empty; pass one L2 strength or more, e.g. (1.0, 0.1, 0.01)")
    return best


def probe_layers(features: LayerFeatures, n_classes: int, train_rows: np.ndarray | None = None,
                 l2_grid: Sequence[float] = L2_GRID) -> pd.DataFrame:
    """One probe per layer; a row each: layer, l2, validation_accuracy, test_accuracy."""
    rows = []
    tr = train_rows if train_rows is not None else np.arange(features.labels["train"].shape[0])
    scored = {s: features.labels[s] >= 0 for s in ("validation", "test")}  # labels never seen in training: left out
    for layer in range(features.n_layers):
        x = {s: features.splits[s][layer] for s in ("train", "validation", "test")}
        probe = fit_probe(x["train"][tr], features.labels["train"][tr], x["validation"][scored["validation"]],
                          features.labels["validation"][scored["validation"]], n_classes, l2_grid)
        test_y = features.labels["test"][scored["test"]]
        rows.append({"layer": layer, "l2": probe.l2, "validation_accuracy": probe.validation_accuracy,
                     "test_accuracy": float((probe.predict(x["test"][scored["test"]]) == test_y).mean())})
    return pd.DataFrame(rows)


def probe_seeds(features: LayerFeatures, data: TaskData, seeds: Sequence[int], train_size: int = 0,
                l2_grid: Sequence[float] = L2_GRID) -> pd.DataFrame:
    """Layer probes of one model per seed (its labelled sample); a row each: seed, layer, l2, accuracies, n_train, n_test."""
    if train_size and train_size < len(data.labels):
        raise WorkbenchError(f"probe train_size {train_size} is fewer than the {len(data.labels)} classes; "
                             f"pass {len(data.labels)} or more (0 = all)")
    frames: list[pd.DataFrame] = []
    for seed in seeds:
        rows = stratified_sample(data.splits["train"]["label"], train_size, seed) if train_size else None
        if rows is None and frames:  # the same features and examples: the convex fit gives the same probe
            frames.append(frames[0].assign(seed=seed))
            continue
        frame = probe_layers(features, len(data.labels), rows, l2_grid)
        frame.insert(0, "seed", seed)
        frame["n_train"] = len(data.splits["train"]) if rows is None else len(rows)
        frame["n_test"] = int((features.labels["test"] >= 0).sum())
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def probe_models(inits: Sequence[str], data: TaskData, cfg: ProbeConfig | None = None, *,
                 l2_grid: Sequence[float] = L2_GRID, progress: Callback | None = None) -> pd.DataFrame:
    """Layer probes per (init, seed); a row each: init, seed, layer, n_train, n_test, l2, accuracies.

    From ``cfg``: seeds 0 .. probe_seeds - 1; probe_train_size labelled examples (0 = all) drawn
    per seed, the same for every init; texts of probe_max_length tokens, probe_batch_size per
    encoder batch. A ``random:`` init gets fresh weights per seed, any other is encoded once.
    ``cfg.probe_max_examples`` is the caller's to apply to ``data`` (:func:`cap_examples`).
    """
    cfg = cfg or ProbeConfig()
    seeds, train_size = list(range(cfg.probe_seeds)), cfg.probe_train_size
    max_length, batch_size = cfg.probe_max_length, cfg.probe_batch_size
    frames = []
    for init in inits:
        fresh = init.startswith("random:")
        for group in ([[s] for s in seeds] if fresh else [list(seeds)]):
            encoder, tok = load_encoder(init, group[0])
            features = layer_features(encoder, tok, data, max_length, batch_size, init)
            frame = probe_seeds(features, data, group, train_size, l2_grid)
            frames.append(frame.assign(init=init))
            if progress is not None:
                best = best_layer(frames[-1], init)
                progress(f"{label_for(init)}: seed(s) {', '.join(map(str, group))}: best layer on validation "
                         f"{', '.join(map(str, best['layer']))}, test {', '.join(f'{a:.3f}' for a in best['test_accuracy'])}")
    runs = pd.concat(frames, ignore_index=True)
    return runs[["init", *[c for c in runs.columns if c != "init"]]]


def probe_summary(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Test accuracy per (init, layer): seeds, mean and its confidence interval over seeds."""
    rows = []
    for (init, layer), part in runs.groupby(["init", "layer"], sort=False):
        mean, low, high = mean_ci(part["test_accuracy"].tolist(), confidence)
        rows.append({"init": init, "layer": int(layer), "seeds": len(part), "accuracy_mean": mean,
                     "accuracy_low": low, "accuracy_high": high})
    return pd.DataFrame(rows)


def best_layer(runs: pd.DataFrame, init: str) -> pd.DataFrame:
    """Per seed, the layer with the best validation accuracy (ties: the lower layer) and its test accuracy."""
    part = runs[runs["init"] == init]
    if part.empty:
        raise WorkbenchError(f"no probe runs for {init!r}; probe it first (inits: {', '.join(runs['init'].unique())})")
    best = part.sort_values(["seed", "validation_accuracy", "layer"], ascending=[True, False, True])
    return best.groupby("seed", sort=True).head(1).set_index("seed")


def probe_gain(runs: pd.DataFrame, model: str, baseline: str, confidence: float = 0.95) -> dict[str, Any]:
    """Headline of ``model`` against ``baseline`` (best layer on validation, per seed), paired by seed.

    Returns accuracy, baseline_accuracy (mean, low, high), the layers chosen, and ``gain``: the
    paired difference (mean, low, high, n, verdict) from :func:`workbench.evaluation.stats.paired_difference`.
    """
    a, b = best_layer(runs, model), best_layer(runs, baseline)
    seeds = sorted(set(a.index) & set(b.index))
    if len(seeds) < 2:
        raise WorkbenchError(f"{model!r} and {baseline!r} share {len(seeds)} seed(s); a paired CI needs 2 or more")
    x, y = a.loc[seeds, "test_accuracy"].tolist(), b.loc[seeds, "test_accuracy"].tolist()
    return {"model": model, "baseline": baseline, "seeds": seeds,
            "n_test": int(a["n_test"].iloc[0]), "n_train": int(a["n_train"].iloc[0]),
            "accuracy": mean_ci(x, confidence), "baseline_accuracy": mean_ci(y, confidence),
            "layers": a.loc[seeds, "layer"].astype(int).tolist(),
            "baseline_layers": b.loc[seeds, "layer"].astype(int).tolist(),
            "gain": paired_difference(x, y, confidence)}


def headline_metrics(gain: dict[str, Any], task: str, prefix: str = "downstream",
                     chance: float | None = None) -> dict[str, Any]:
    """The run index's headline numbers of :func:`probe_gain`: ``downstream_accuracy``, ``..._gain_ci_low``, ...

    With ``chance``, two encoders both within noise of it get the verdict "at chance" (see :func:`at_chance`).
    """
    diff = gain["gain"]
    verdict = gain_verdict(gain, chance)
    return {f"{prefix}_task": task, f"{prefix}_method": "linear probe (frozen encoder, layer chosen on validation)",
            f"{prefix}_n_test": gain["n_test"], f"{prefix}_n_train": gain["n_train"], f"{prefix}_seeds": diff["n"],
            f"{prefix}_accuracy": gain["accuracy"][0], f"{prefix}_random_accuracy": gain["baseline_accuracy"][0],
            f"{prefix}_gain": diff["mean"], f"{prefix}_gain_ci_low": diff["low"], f"{prefix}_gain_ci_high": diff["high"],
            f"{prefix}_verdict": verdict}


def headline_table(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per init: the layers chosen on validation (one per seed) and their test accuracy, mean and CI."""
    rows = []
    for init in dict.fromkeys(runs["init"]):
        best = best_layer(runs, init)
        mean, low, high = mean_ci(best["test_accuracy"].tolist(), confidence)
        rows.append({"init": init, "seeds": len(best), "layers": ", ".join(map(str, best["layer"])),
                     "accuracy_mean": mean, "accuracy_low": low, "accuracy_high": high})
    return pd.DataFrame(rows).set_index("init")


def cap_examples(data: TaskData, n: int, seed: int = 0) -> TaskData:
    """At most ``n`` examples per split, a stratified sample (0: all), for a quick check."""
    if not n or all(len(f) <= n for f in data.splits.values()):
        return data
    splits = {k: f.iloc[stratified_sample(f["label"], n, seed)].reset_index(drop=True) for k, f in data.splits.items()}
    return TaskData(data.name, splits, data.labels, data.pairs,
                    [*data.notes, f"a stratified sample of at most {n} examples per split (seed {seed})"])


# ------------------------------------------------------------------------------ bigram shift
def _sentences(text: str, min_words: int, max_words: int) -> list[str]:
    return [s.strip() for s in split_sentences(text) if min_words <= len(s.split()) <= max_words]


def _shift(sentence: str, rng: random.Random) -> str | None:
    """The sentence with two adjacent, different words swapped, or None if there are none."""
    words = sentence.split()
    spots = [i for i in range(len(words) - 1) if words[i].lower() != words[i + 1].lower()]
    if not spots:
        return None
    i = rng.choice(spots)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def probe_bigram_shift(model: str, data: TaskData, cfg: ProbeConfig | None = None, *, baseline: str = "",
                       inits: Sequence[str] = (), l2_grid: Sequence[float] = L2_GRID,
                       progress: Callback | None = None) -> ProbeGain:
    """The bigram-shift probe of ``model`` against ``baseline`` (default: its random twin), read against chance.

    BShift is made from ``data``'s texts (:func:`bigram_shift`, at most ``cfg.bshift_examples``
    sentences per split, seed 0) and probed as :func:`probe_models` does, on every train sentence
    (``probe_train_size`` is the topic task's). ``inits``: more encoders for scale (builtin:minilm).
    Two encoders both within binomial noise of 0.5 get the verdict "at chance" (``stats.at_chance``).
    """
    cfg = cfg or ProbeConfig()
    if not cfg.bshift_examples:
        raise WorkbenchError("bshift_examples is 0, which skips the bigram-shift probe; pass bshift_examples=2000, "
                             "or leave the probe out")
    baseline = baseline or f"random:{model}"
    shifted = bigram_shift(data, seed=0, max_examples=cfg.bshift_examples)
    runs = probe_models(list(dict.fromkeys([model, baseline, *inits])), shifted, replace(cfg, probe_train_size=0),
                        l2_grid=l2_grid, progress=progress)
    return ProbeGain(probe_gain(runs, model, baseline), headline_table(runs), chance=BSHIFT_CHANCE, runs=runs)


def bigram_shift(data: TaskData, seed: int = 0, min_words: int = 5, max_words: int = 40,
                 max_examples: int = 2000) -> TaskData:
    """BShift (Conneau et al. 2018) from the sentences of each split's texts: half have two adjacent words swapped.

    Every sentence appears once, swapped or not, in the split its text came from (so held-out
    text stays held out); at most ``max_examples`` per split, classes balanced.
    """
    rng = random.Random(seed)
    splits = {}
    for name, frame in data.splits.items():
        sentences = list(dict.fromkeys(s for text in frame["text"] for s in _sentences(text, min_words, max_words)))
        rng.shuffle(sentences)
        rows = []
        for k, sentence in enumerate(sentences[:max_examples]):
            shifted = _shift(sentence, rng) if k % 2 else None
            rows.append((shifted, "swapped") if shifted else (sentence, "original"))
        if len({label for _, label in rows}) < 2:
            raise WorkbenchError(f"bigram shift: split {name} has {len(rows)} usable sentence(s) of {min_words}-"
                                 f"{max_words} words; pass a task with more text")
        splits[name] = pd.DataFrame(rows, columns=["text", "label"])
    notes = [f"bigram shift from the sentences of {data.name} ({min_words}-{max_words} words, seed {seed}): "
             + ", ".join(f"{k} {len(v)}" for k, v in splits.items())]
    return TaskData(f"bshift:{data.name}", splits, ["original", "swapped"], False, notes)
