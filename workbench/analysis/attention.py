"""Attention analysis after Clark et al. 2019 ("What Does BERT Look At?") and head ablation
after Michel et al. 2019 ("Are Sixteen Heads Really Better than One?").

Attention arrays are numpy float32 shaped (layer, head, query, key) for one example, rows sum
to 1. The statistics and distances are pure functions of (tokens, attention) pairs, so they can
be checked against hand-built patterns; the model-facing helpers only produce those pairs.
"""

from __future__ import annotations

import random
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from scipy.special import xlogy

from ..builtin import resolve_pretrained
from ..config import AttentionConfig, MaskingConfig
from ..data.corpora import iter_documents
from ..data.labels import IGNORE_INDEX
from ..errors import WorkbenchError, pickle_refusal

__all__ = [
    "STAT_COLUMNS",
    "AttentionResult",
    "HeadAblation",
    "Segment",
    "load_attention_model",
    "fit_to_model",
    "get_attentions",
    "collect_attentions",
    "head_statistics",
    "compute_head_stats",
    "corpus_segments",
    "notable_heads",
    "head_distances",
    "cluster_heads",
    "mds_embedding",
    "silence_heads",
    "head_importance",
    "mlm_loss_metric",
    "representation_shift_metric",
    "load_ablation_model",
    "ablation_batches",
    "ablation_metric",
    "ablate_heads",
    "sample_segments",
]

Segment = str | tuple[str, str]
# a list, so df[STAT_COLUMNS] selects the columns (a tuple would be one key)
STAT_COLUMNS = [
    "attn_cls",
    "attn_sep",
    "attn_punct",
    "attn_self",
    "attn_prev",
    "attn_next",
    "argmax_self",
    "argmax_prev",
    "argmax_next",
    "entropy",
    "distance",
]


class AttentionResult(NamedTuple):
    """One example's word pieces and its (layer, head, query, key) float32 attention."""

    tokens: list[str]
    attentions: np.ndarray


# ----------------------------------------------------------------------------- model side


def load_attention_model(spec: str, device: str | None = None) -> tuple[Any, Any]:
    """Load any BERT checkpoint's encoder with eager attention (so weights are returned), in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    from ..training.checkpoint import check_model_checkpoint  # lazy: as resolve_pretrained's

    path = resolve_pretrained(spec)
    check_model_checkpoint(path)  # a damaged checkpoint: one line offering the previous good one
    try:
        # AutoModel on a BertForPreTraining/BertForMaskedLM checkpoint loads just the encoder;
        # sdpa (the default) returns no attention weights, hence eager.
        model = AutoModel.from_pretrained(path, attn_implementation="eager")
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # any load failure here is a problem with the spec the user gave
        from ..training.model import load_failure  # lazy: model.py imports transformers

        reason = load_failure(exc, AutoModel, path, attn_implementation="eager")
        refusal = pickle_refusal(exc, f"model {spec!r}", path)
        raise refusal or WorkbenchError(
            f"cannot load model {spec!r} ({reason}); pass a local checkpoint dir, a cached hub "
            "name, or builtin:minilm"
        ) from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def _check_eager(model: Any) -> None:
    impl = getattr(model.config, "_attn_implementation", "eager")
    if impl != "eager":
        raise WorkbenchError(
            f"model uses {impl!r} attention, which returns no attention weights; load it with "
            "load_attention_model() or call model.set_attn_implementation('eager')"
        )


def _encode_one(tokenizer: Any, segment: Segment, max_length: int) -> Any:
    """One segment (a text or a pair) as the tokenizer encodes it, with segment ids.

    ``token_type_ids`` are asked for: a fast tokenizer whose ``model_input_names`` leave them
    out still makes them (B is 1 for a BERT template), as pretraining gave them to the model.
    """
    return tokenizer(*(segment if isinstance(segment, tuple) else (segment,)), truncation=True,
                     max_length=max_length, return_token_type_ids=True)


def _encode_segments(tokenizer: Any, segments: Sequence[Segment], max_length: int) -> dict:
    # encode one by one, then pad: a batch may mix single texts and sentence pairs
    encoded = [_encode_one(tokenizer, s, max_length) for s in segments]
    return tokenizer.pad(encoded, return_tensors="pt")


@torch.no_grad()
def _forward_attentions(model: Any, tokenizer: Any, segments: Sequence[Segment], max_length: int):
    _check_eager(model)
    enc = _encode_segments(tokenizer, segments, max_length)
    device = next(model.parameters()).device
    out = model(**{k: v.to(device) for k, v in enc.items()}, output_attentions=True)
    # L tensors of (batch, head, T, T) -> (batch, L, H, T, T)
    att = torch.stack(out.attentions, dim=1).float().cpu().numpy()
    for i, mask in enumerate(enc["attention_mask"].numpy()):
        keep = np.flatnonzero(mask)  # works for left or right padding
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][i, keep].tolist())
        # padded keys got ~exp(-inf) = 0 weight, so the kept rows still sum to 1
        a = np.ascontiguousarray(att[i][:, :, keep][:, :, :, keep], dtype=np.float32)
        yield AttentionResult(tokens, a)


def fit_to_model(cfg: AttentionConfig, model: Any) -> AttentionConfig:
    """``cfg`` with layer, head and n_clusters brought within the model (a tiny model has 2 layers of 2 heads)."""
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    fitted = replace(cfg, layer=min(cfg.layer, layers - 1), head=min(cfg.head, heads - 1),
                     n_clusters=min(cfg.n_clusters, layers * heads))
    changed = [f"{k} {getattr(cfg, k)} -> {getattr(fitted, k)}" for k in ("layer", "head", "n_clusters")
               if getattr(cfg, k) != getattr(fitted, k)]
    if changed:
        print(f"note: the model has {layers} layers x {heads} heads, so {', '.join(changed)}", file=sys.stderr)
    return fitted


def get_attentions(
    model: Any, tokenizer: Any, text: Segment, max_length: int = 128
) -> AttentionResult:
    """Word pieces and (layer, head, query, key) attention for one text or sentence pair."""
    return next(_forward_attentions(model, tokenizer, [text], max_length))


def collect_attentions(
    model: Any,
    tokenizer: Any,
    segments: Sequence[Segment],
    batch_size: int = 16,
    max_length: int = 128,
) -> Iterator[AttentionResult]:
    """Yield (tokens, (L, H, T, T) attention) per segment, in order, batched, padding removed."""
    for start in range(0, len(segments), batch_size):
        yield from _forward_attentions(
            model, tokenizer, segments[start : start + batch_size], max_length
        )


# ----------------------------------------------------------------------------- statistics


def _is_punct(token: str) -> bool:
    piece = token.removeprefix("##")
    return bool(piece) and all(unicodedata.category(c).startswith("P") for c in piece)


def _pairs(examples: Iterable[Any]) -> Iterator[tuple[list[str], np.ndarray]]:
    shape = None
    for tokens, att in examples:
        att = np.asarray(att)
        n = len(tokens)
        if att.ndim != 4 or att.shape[2:] != (n, n):
            raise WorkbenchError(
                f"attention shaped {att.shape} does not match {n} tokens; expected (layer, head, {n}, {n})"
            )
        if shape is not None and att.shape[:2] != shape:
            raise WorkbenchError(
                f"examples mix {shape} and {att.shape[:2]} (layer, head) shapes; use one model"
            )
        shape = att.shape[:2]
        yield list(tokens), att.astype(np.float64)


def head_statistics(examples: Iterable[Any], cls_token: str, sep_token: str) -> pd.DataFrame:
    """Clark et al.'s per-head statistics, one row per (layer, head), from (tokens, attention) pairs.

    ``cls_token``/``sep_token``: the tokenizer's own (``[CLS]``/``[SEP]`` in BERT, ``<s>``/``</s>`` in
    others); to measure a model, call :func:`compute_head_stats`, which passes them.
    """
    # Choices (Clark et al. average over all queries, and so do we):
    # - every query row counts, [CLS]/[SEP]/punctuation queries included; each statistic is the
    #   mean over an example's queries, then the mean over examples (each segment weighs the same);
    # - prev/next are averaged over the T-1 queries that have a previous/next token, so a pure
    #   previous-token head scores exactly 1 (the first token has no previous token to attend to);
    # - argmax ties go to the lowest key index (np.argmax);
    # - punctuation = a word piece made only of Unicode punctuation (category P*), "##" stripped;
    # - entropy is in nats; distance is the attention-weighted mean |query - key| in word pieces.
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def add(name: str, value: np.ndarray) -> None:
        sums[name] = sums.get(name, 0.0) + value
        counts[name] = counts.get(name, 0) + 1

    shape = None
    for tokens, a in _pairs(examples):  # a: (L, H, T, T)
        shape, n = a.shape[:2], len(tokens)
        pos = np.arange(n)
        masks = {
            "attn_cls": np.array([t == cls_token for t in tokens]),
            "attn_sep": np.array([t == sep_token for t in tokens]),
            "attn_punct": np.array([_is_punct(t) for t in tokens]),
        }
        for name, keys in masks.items():
            add(name, a[..., keys].sum(-1).mean(-1))  # (L, H, T, k) -> (L, H)
        add("attn_self", np.diagonal(a, 0, 2, 3).mean(-1))
        am = a.argmax(-1)  # (L, H, T) key index of each query's largest weight
        add("argmax_self", (am == pos).mean(-1))
        if n > 1:
            add("attn_prev", np.diagonal(a, -1, 2, 3).mean(-1))  # a[q, q-1], q = 1..T-1
            add("attn_next", np.diagonal(a, 1, 2, 3).mean(-1))  # a[q, q+1], q = 0..T-2
            add("argmax_prev", (am[..., 1:] == pos[:-1]).mean(-1))
            add("argmax_next", (am[..., :-1] == pos[1:]).mean(-1))
        add("entropy", -xlogy(a, a).sum(-1).mean(-1))
        add("distance", (a * np.abs(pos[:, None] - pos[None, :])).sum(-1).mean(-1))
    if shape is None:
        raise WorkbenchError(
            "no examples to compute head statistics from; pass at least one segment"
        )
    layers, heads = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    df = pd.DataFrame({"layer": layers.ravel(), "head": heads.ravel()})
    for name in STAT_COLUMNS:
        df[name] = (sums[name] / counts[name]).ravel() if name in sums else np.nan
    df.attrs["n_examples"] = counts["entropy"]
    return df


def compute_head_stats(
    spec_or_model: str | Any,
    segments: Sequence[Segment],
    tokenizer: Any = None,
    batch_size: int = 16,
    max_length: int = 128,
    device: str | None = None,
    keep: list[AttentionResult] | None = None,
) -> pd.DataFrame:
    """Head statistics of a model (a spec, or a model with its tokenizer) over segments, at the tokenizer's own [CLS]/[SEP].

    The one verb for head statistics: the ``heads`` command, notebook 03 and ``progression.by_step``
    call it. ``keep``: a list that gets each segment's (tokens, attention), for the clusters.
    """
    if isinstance(spec_or_model, str):
        model, tokenizer = load_attention_model(spec_or_model, device)
    elif tokenizer is None:
        raise WorkbenchError("compute_head_stats got a model but no tokenizer; pass tokenizer=...")
    else:
        model = spec_or_model
    examples = collect_attentions(model, tokenizer, segments, batch_size, max_length)
    if keep is not None:
        examples = _kept(examples, keep)
    return head_statistics(examples, tokenizer.cls_token, tokenizer.sep_token)


def _kept(examples: Iterable[AttentionResult], keep: list[AttentionResult]) -> Iterator[AttentionResult]:
    for example in examples:
        keep.append(example)
        yield example


def corpus_segments(cfg: AttentionConfig, tokenizer: Any) -> list[Segment]:
    """``cfg.num_segments`` segments of ``cfg.corpus`` drawn with ``cfg.seed`` (what ``heads`` and notebook 03 measure)."""
    documents = list(iter_documents(cfg.corpus))
    return sample_segments(documents, cfg.num_segments, tokenizer, cfg.max_seq_length, cfg.seed)


# ----------------------------------------------------------------------------- head clusters


def notable_heads(stats: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Heads with > threshold attention on [CLS] or [SEP], or argmax at the previous/next token."""
    rows = []
    for column, what in (("attn_cls", "attends to [CLS]"), ("attn_sep", "attends to [SEP]"),
                         ("argmax_prev", "argmax is the previous token"),
                         ("argmax_next", "argmax is the next token")):
        for _, r in stats[stats[column] > threshold].iterrows():
            rows.append({"layer": int(r["layer"]), "head": int(r["head"]), "pattern": what,
                         "value": round(float(r[column]), 3)})
    return pd.DataFrame(rows, columns=["layer", "head", "pattern", "value"])


def head_distances(examples: Iterable[Any]) -> np.ndarray:
    """(L*H, L*H) mean Jensen-Shannon divergence (nats, max ln 2) between heads' attention rows."""
    # Like Clark et al. we use the JS divergence itself (not its square root) with natural logs,
    # so identical heads are 0 apart and heads with disjoint supports ln 2 apart. Per example we
    # average over query rows, then average over examples. Head index = layer * H + head.
    total, n_examples = None, 0
    for _, a in _pairs(examples):
        p = a.reshape(-1, *a.shape[2:])  # (L*H, T, T)
        ent = -xlogy(p, p).sum(-1)  # (L*H, T) row entropies
        d = np.zeros((len(p), len(p)))
        for i in range(len(p)):
            m = 0.5 * (p[i] + p[i:])  # (L*H - i, T, T) mixtures with every later head
            js = -xlogy(m, m).sum(-1) - 0.5 * (ent[i] + ent[i:])  # JS = H(M) - (H(P) + H(Q)) / 2
            d[i, i:] = js.mean(-1)
        d = np.maximum(d, 0.0)  # float round-off can leave -1e-17
        total = (d + np.triu(d, 1).T) + (0 if total is None else total)
        n_examples += 1
    if total is None:
        raise WorkbenchError(
            "no examples to compute head distances from; pass at least one segment"
        )
    out = total / n_examples
    np.fill_diagonal(out, 0.0)
    return out


def cluster_heads(distances: np.ndarray, n_clusters: int, method: str = "average") -> np.ndarray:
    """Hierarchical clustering of heads from a distance matrix; labels 0..n_clusters-1 per head."""
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise WorkbenchError(f"distances must be a square matrix, got shape {d.shape}")
    if not 1 <= n_clusters <= len(d):
        raise WorkbenchError(f"n_clusters={n_clusters} must be between 1 and the {len(d)} heads")
    if len(d) == 1:
        return np.zeros(1, dtype=int)
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    tree = linkage(squareform(d, checks=False), method=method)
    return fcluster(tree, t=n_clusters, criterion="maxclust").astype(int) - 1


def mds_embedding(distances: np.ndarray, n_components: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS of a distance matrix: (n, n_components) coordinates for plotting."""
    d = np.asarray(distances, dtype=np.float64)
    n = len(d)
    j = np.eye(n) - np.full((n, n), 1.0 / n)  # centring matrix
    b = -0.5 * j @ (0.5 * (d + d.T)) ** 2 @ j  # double-centred squared distances
    vals, vecs = np.linalg.eigh(b)  # ascending eigenvalues
    top = np.argsort(vals)[::-1][:n_components]
    # a non-Euclidean input (JS divergence is not a metric) gives negative eigenvalues: clip them
    coords = vecs[:, top] * np.sqrt(np.clip(vals[top], 0.0, None))
    if coords.shape[1] < n_components:
        coords = np.pad(coords, ((0, 0), (0, n_components - coords.shape[1])))
    return coords


# ----------------------------------------------------------------------------- head ablation


def _layers(model: Any) -> Sequence[Any]:
    base = getattr(model, "base_model", model)
    try:
        return base.encoder.layer
    except AttributeError:
        raise WorkbenchError(
            f"{type(model).__name__} has no encoder.layer list; head ablation supports BERT-style models"
        ) from None


def _head_list(heads: dict[int, list[int]] | Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    if isinstance(heads, dict):
        return [(int(layer), int(h)) for layer, hs in heads.items() for h in hs]
    return [(int(layer), int(h)) for layer, h in heads]


@contextmanager
def silence_heads(
    model: Any, heads: dict[int, list[int]] | Iterable[tuple[int, int]]
) -> Iterator[None]:
    """Zero the chosen heads' context vectors (before the output projection) inside the block."""
    layers = _layers(model)
    n_heads = model.config.num_attention_heads
    size = model.config.hidden_size // n_heads  # d, per-head width of the context vector
    by_layer: dict[int, list[int]] = {}
    for layer, h in _head_list(heads):
        if not (0 <= layer < len(layers) and 0 <= h < n_heads):
            raise WorkbenchError(
                f"head ({layer}, {h}) is out of range; the model has {len(layers)} layers x {n_heads} heads"
            )
        by_layer.setdefault(layer, []).append(h)
    handles = []
    try:
        for layer, hs in by_layer.items():
            dense = layers[layer].attention.output.dense  # W_O: (B, T, H*d) -> (B, T, hidden)
            keep = torch.ones(dense.in_features)
            for h in hs:
                keep[h * size : (h + 1) * size] = 0.0  # head h owns columns [h*d, (h+1)*d)

            def hook(module: Any, args: tuple, keep: torch.Tensor = keep) -> tuple:
                # Michel et al.'s mask xi_h = 0 on head h's output; W_O's bias still applies
                x = args[0]
                return (x * keep.to(device=x.device, dtype=x.dtype), *args[1:])

            handles.append(dense.register_forward_pre_hook(hook))
        yield  # no heads -> no hooks, so outputs stay bit-identical
    finally:
        for handle in handles:
            handle.remove()


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # labels etc. stay out


def _mlm_logits(out: Any) -> torch.Tensor:
    for name in ("logits", "prediction_logits"):  # BertForMaskedLM, BertForPreTraining
        logits = getattr(out, name, None)
        if logits is not None:
            return logits
    raise WorkbenchError(
        "model returned no MLM logits; use a BertForMaskedLM or BertForPreTraining"
    )


@torch.no_grad()
def mlm_loss_metric(model: Any, batches: Iterable[dict]) -> float:
    """Mean MLM cross-entropy over all labelled tokens (IGNORE_INDEX skipped) of the batches."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        if "labels" not in batch:
            raise WorkbenchError(f"mlm_loss_metric needs batches with `labels` ({IGNORE_INDEX} = not masked)")
        inputs = {k: batch[k].to(device) for k in _MODEL_INPUTS if k in batch}
        logits = _mlm_logits(model(**inputs))  # (B, T, vocab)
        labels = batch["labels"].to(device)  # (B, T)
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total += loss.item()
        count += int((labels != IGNORE_INDEX).sum())
    if count == 0:
        raise WorkbenchError(f"no labelled tokens in the batches; mask some tokens (labels != {IGNORE_INDEX})")
    return total / count


def head_importance(
    model: Any, batches: Iterable[Any], metric_fn: Callable[[Any, Any], float]
) -> np.ndarray:
    """(L, H) change metric(head silenced alone) - metric(intact); for a loss, larger = more important."""
    batches = list(batches)  # iterated L*H + 1 times
    layers = _layers(model)
    n_heads = model.config.num_attention_heads
    base = float(metric_fn(model, batches))
    out = np.zeros((len(layers), n_heads))
    for layer in range(len(layers)):
        for h in range(n_heads):
            with silence_heads(model, [(layer, h)]):
                out[layer, h] = float(metric_fn(model, batches)) - base
    return out


def load_ablation_model(spec: str, device: str | None = None) -> tuple[Any, Any, bool]:
    """A checkpoint as BertForMaskedLM for ablation, its tokenizer, and whether it has a trained MLM head."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from ..training.model import (  # lazy: model.py imports transformers
        load_failure,
        quiet_transformers,
    )

    path = resolve_pretrained(spec)
    try:
        # quiet: the missing-head load report is expected; we return has_head instead.
        # sdpa: ablation hooks sit after attention, so the fast kernel can stay on.
        with quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
            tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        reason = load_failure(exc, AutoModelForMaskedLM, path)
        refusal = pickle_refusal(exc, f"model {spec!r}", path)
        raise refusal or WorkbenchError(f"cannot load model {spec!r} ({reason}); pass a checkpoint dir or builtin:minilm") from None
    # An encoder-only checkpoint (builtin:minilm) gets a freshly initialised MLM head: its loss
    # would measure noise, so callers fall back to representation_shift_metric.
    has_head = not any(k.startswith("cls.") for k in info["missing_keys"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer, has_head


def ablation_batches(tokenizer: Any, segments: Sequence[Segment], masking: Any, seed: int = 0,
                     batch_size: int = 16, max_length: int = 128) -> list[dict]:
    """Masked batches (with `labels`) of the segments, masked as in training with a fixed seed."""
    from ..data.masking import PretrainingCollator

    collate = PretrainingCollator(tokenizer, masking, seed=seed)
    encoded = [_encode_one(tokenizer, s, max_length) for s in segments]
    examples = [{k: e[k] for k in ("input_ids", "token_type_ids") if k in e} for e in encoded]  # no ids: zeros
    return [collate(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]


def representation_shift_metric(model: Any, batches: Sequence[dict]) -> Callable[[Any, Any], float]:
    """A metric for head_importance: mean cosine distance of last hidden states from the intact model's."""

    @torch.no_grad()
    def hidden(m: Any, bs: Sequence[dict]) -> list[torch.Tensor]:
        m.eval()
        device = next(m.parameters()).device
        outs = []
        for b in bs:
            out = m(**{k: b[k].to(device) for k in _MODEL_INPUTS if k in b}, output_hidden_states=True)
            outs.append(out.hidden_states[-1].float())  # (B, T, hidden)
        return outs

    reference = hidden(model, batches)

    def metric(m: Any, bs: Sequence[dict]) -> float:
        total, count = 0.0, 0
        for ref, h, b in zip(reference, hidden(m, bs), bs, strict=True):
            mask = b["attention_mask"].to(h.device).bool()  # (B, T): real tokens only
            cos = torch.nn.functional.cosine_similarity(ref, h, dim=-1)[mask]
            total += float((1 - cos).sum())
            count += int(mask.sum())
        return total / max(count, 1)

    return metric


class HeadAblation(NamedTuple):
    """Head ablation's answer: the (layer, head) change of ``metric`` when each head is silenced alone."""

    importance: np.ndarray  # (L, H): metric(head silenced) - metric(intact)
    metric: str  # what was measured, in words


def ablation_metric(model: Any, batches: Sequence[dict], has_head: bool) -> tuple[Callable[[Any, Any], float], str]:
    """What a silenced head is measured by, and its name: MLM loss with a trained MLM head, else representation shift."""
    if has_head:
        return mlm_loss_metric, "MLM loss increase"
    # An encoder-only checkpoint's MLM head is freshly initialised: its loss would measure noise.
    return representation_shift_metric(model, batches), "representation shift (1 - cosine)"


def ablate_heads(cfg: AttentionConfig, segments: Sequence[Segment], tokenizer: Any = None) -> HeadAblation:
    """Silence each head of ``cfg.model`` alone over the first ``cfg.ablation_segments`` segments, masked with ``cfg.seed``.

    ``tokenizer``: the one the segments were sampled with (default: the checkpoint's own).
    """
    model, own, has_head = load_ablation_model(cfg.model)
    batches = ablation_batches(tokenizer or own, segments[:cfg.ablation_segments], MaskingConfig(), cfg.seed)
    metric, name = ablation_metric(model, batches, has_head)
    return HeadAblation(head_importance(model, batches, metric), name)


# ----------------------------------------------------------------------------- segments


def sample_segments(
    documents: Sequence[Sequence[str]],
    n: int,
    tokenizer: Any,
    max_length: int = 128,
    seed: int = 0,
    pair_prob: float = 0.5,
) -> list[Segment]:
    """Pick n segments of consecutive sentences packed to ~max_length tokens, some as pairs."""
    rng = random.Random(seed)
    docs = [[s.strip() for s in doc if s.strip()] for doc in documents]
    order = [i for i, doc in enumerate(docs) if doc]
    if not order:
        raise WorkbenchError("no non-empty documents to sample segments from; check the corpus")
    rng.shuffle(order)
    lengths: dict[tuple[int, int], int] = {}  # word pieces per (doc, sentence), tokenized lazily
    used: set[tuple[int, int]] = set()
    segments: list[Segment] = []
    tries = 0
    # visit documents round-robin in shuffled order, each time from a random unused first sentence
    while len(segments) < n and tries < 50 * max(n, len(order)):
        d = order[tries % len(order)]
        tries += 1
        start = rng.randrange(len(docs[d]))
        if (d, start) in used:
            continue
        used.add((d, start))
        pair = rng.random() < pair_prob
        budget = max_length - (3 if pair else 2)  # [CLS] A [SEP] (B [SEP])
        picked, size = [], 0
        for i in range(start, len(docs[d])):
            if (d, i) not in lengths:
                lengths[(d, i)] = len(tokenizer.tokenize(docs[d][i]))
            if picked and size + lengths[(d, i)] > budget:
                break
            picked.append(docs[d][i])  # a first sentence longer than budget is truncated later
            size += lengths[(d, i)]
        if pair and len(picked) >= 2:
            cut = rng.randrange(1, len(picked))
            segments.append((" ".join(picked[:cut]), " ".join(picked[cut:])))
        else:
            segments.append(" ".join(picked))
    if len(segments) < n:
        raise WorkbenchError(
            f"found only {len(segments)} distinct segments for n={n}; lower n or add documents"
        )
    return segments
