"""BERT for pretraining: size presets, model construction, and the sparse MLM + NSP/SOP loss.

The presets are the compact sizes of Turc et al. (2019), "Well-Read Students Learn Better";
each preset's fields are :class:`transformers.BertConfig` arguments, one to one. The loss runs
the prediction head only at masked positions (as Cramming does): for small models the
full-vocabulary head over every position costs more than the encoder itself. It goes one
layer further: the last layer computes its queries, attention output and feed-forward only
at the masked positions and [CLS], since no loss reads the others. The encoder runs on the
model's own (Hugging Face) parameters, one QKV matmul per layer, so checkpoints stay plain
``BertForPreTraining`` ones, and the loss and gradients equal the full model's (a test).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForPreTraining, BertModel, PreTrainedTokenizerBase
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward
from transformers.utils import logging as hf_logging

from ..builtin import resolve_pretrained
from ..data.labels import IGNORE_INDEX
from ..errors import WorkbenchError, one_line, pickle_refusal

__all__ = [
    "PRESETS",
    "PretrainingLoss",
    "PretrainingModule",
    "build_model",
    "load_failure",
    "pretraining_loss",
    "preset_config",
    "quiet_transformers",
]

log = logging.getLogger(__name__)


def _preset(layers: int, hidden: int, heads: int) -> dict[str, int]:
    # BERT's shape rules: feed-forward 4H, 512 learned positions, 2 segment types.
    return {
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
    }


# Turc et al. 2019 (google-research/bert's 24 compact models): name -> BertConfig fields.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": _preset(2, 128, 2),
    "mini": _preset(4, 256, 4),
    "small": _preset(4, 512, 8),
    "medium": _preset(8, 512, 8),
    "base": _preset(12, 768, 12),
}


def preset_config(preset: str, vocab_size: int, pad_token_id: int = 0, dropout: float = 0.1,
                  **overrides: Any) -> BertConfig:
    """The BertConfig of ``preset`` for a vocabulary of ``vocab_size`` tokens."""
    if preset not in PRESETS:
        raise WorkbenchError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    return BertConfig(
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        attn_implementation="sdpa",
        architectures=["BertForPreTraining"],
        **{**PRESETS[preset], **overrides},
    )


def build_model(preset: str, tokenizer: PreTrainedTokenizerBase, init: str | None = None,
                dropout: float = 0.1, verbose: bool = True) -> BertForPreTraining:
    """A BertForPreTraining sized by ``preset`` for ``tokenizer``, or initialised from ``init``.

    ``init`` is a local dir, a hub name or `builtin:minilm`; its size replaces the preset. A
    BertModel checkpoint (no heads) gets new MLM and NSP heads, the MLM decoder tied to the
    word embeddings.
    """
    vocab = len(tokenizer)
    if not init:
        model = BertForPreTraining(preset_config(preset, vocab, int(tokenizer.pad_token_id), dropout))
        return model.float()
    path = resolve_pretrained(init)
    if not Path(path).exists() and init.startswith(("/", "./", "../", "~")):
        raise WorkbenchError(f"--init {init!r} does not exist; pass a checkpoint dir, a hub name or builtin:minilm")
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise WorkbenchError(f"could not read the config of --init {init!r}: no config.json; pass a dir saved with save_pretrained")
    try:
        config = BertConfig.from_pretrained(path)
    except Exception as exc:  # hub unreachable, no config.json, not a BERT
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WorkbenchError(f"could not read the config of --init {init!r}: {reason}; pass a BERT checkpoint dir, a hub name or builtin:minilm") from None
    if config.vocab_size != vocab:
        raise WorkbenchError(
            f"--init {init!r} has vocab_size {config.vocab_size} but the tokenizer has {vocab} tokens; "
            f"prepare the data with that checkpoint's tokenizer (workbench prepare --tokenizer {init}) or drop --init"
        )
    try:
        with quiet_transformers():  # our one summary below replaces transformers' load report
            model, info = BertForPreTraining.from_pretrained(
                path, output_loading_info=True, attn_implementation="sdpa", dtype=torch.float32,
                hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            )
    except Exception as exc:
        reason = load_failure(exc, BertForPreTraining, path, 160, attn_implementation="sdpa", dtype=torch.float32)
        refusal = pickle_refusal(exc, f"--init {init!r}", path)
        raise refusal or WorkbenchError(f"could not load --init {init!r}: {reason}; pass a BERT checkpoint dir or builtin:minilm") from None
    model.config.architectures = ["BertForPreTraining"]
    tied = set(getattr(model, "_tied_weights_keys", None) or {})  # decoder: shares loaded/new tensors
    new = sorted(k for k in info["missing_keys"] if k not in tied)
    tied = model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    message = (
        f"initialised BertForPreTraining from {init} (L{config.num_hidden_layers}/H{config.hidden_size}/"
        f"A{config.num_attention_heads} from the checkpoint; --preset is ignored); "
        f"new: {', '.join(_group(new)) or 'none'}; MLM decoder "
        + ("tied to the word embeddings" if tied else "NOT tied to the word embeddings")
    )
    log.info(message)
    if verbose:
        print(message, flush=True)
    return model


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for a block."""
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_failure(exc: BaseException, cls: Any, path: str, limit: int = 200, **kwargs: Any) -> str:
    """Why ``cls.from_pretrained(path, **kwargs)`` failed, in one line.

    transformers ends a size mismatch with "look at the above report!", a report that
    :func:`quiet_transformers` silences; the tensors that do not fit are named instead, read by
    loading once more with ``ignore_mismatched_sizes``.
    """
    text = one_line(exc, limit)
    if "above report" not in text:
        return text
    try:
        with quiet_transformers():
            _, info = cls.from_pretrained(path, **{**kwargs, "ignore_mismatched_sizes": True, "output_loading_info": True})
        mismatched = sorted(info.get("mismatched_keys") or [])
    except Exception:  # noqa: BLE001 - the explanation is best effort; the refusal stands anyway
        mismatched = []
    if not mismatched:
        return "its weights do not fit its config.json (a tensor's shape or layout differs; was config.json edited?)"
    name, saved, wanted = mismatched[0]
    return (f"{len(mismatched)} weight tensor(s) do not fit its config.json, e.g. {name} is {list(saved)} in the "
            f"weights but {list(wanted)} by the config (was config.json edited?)")


def _group(keys: list[str]) -> list[str]:
    """Parameter names shortened to their module (``cls.predictions.transform.*``)."""
    out: list[str] = []
    for k in keys:
        stem = k.rsplit(".", 1)[0] + ".*" if k.endswith((".weight", ".bias")) and k != "cls.predictions.bias" else k
        if stem not in out:
            out.append(stem)
    return out


@dataclass
class PretrainingLoss:
    """The loss to backpropagate plus detached sums and counts for logging and accuracy."""

    loss: torch.Tensor  # () the training objective (grad), normalised as asked
    mlm_loss_sum: torch.Tensor  # () summed token cross-entropy over masked positions
    mlm_count: torch.Tensor  # () masked positions (N)
    mlm_correct: torch.Tensor  # () masked positions whose argmax is the label
    nsp_loss_sum: torch.Tensor  # () summed NSP/SOP cross-entropy (0 without a sentence task)
    nsp_count: torch.Tensor  # () labelled pairs
    nsp_correct: torch.Tensor  # () pairs classified right

    @property
    def mlm_loss(self) -> torch.Tensor:
        """Mean masked-token cross-entropy."""
        return self.mlm_loss_sum / self.mlm_count.clamp(min=1)

    @property
    def nsp_loss(self) -> torch.Tensor:
        """Mean NSP/SOP cross-entropy."""
        return self.nsp_loss_sum / self.nsp_count.clamp(min=1)


def pretraining_loss(model: BertForPreTraining, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor, labels: torch.Tensor,
                     next_sentence_label: torch.Tensor | None = None,
                     mlm_norm: float | torch.Tensor | None = None,
                     nsp_norm: float | torch.Tensor | None = None) -> PretrainingLoss:
    """MLM loss over masked positions only, plus NSP/SOP on the pooled output when labelled.

    ``loss = mlm_sum / mlm_norm + nsp_sum / nsp_norm``; the norms default to this batch's counts
    (means, as BertForPreTraining). The trainer passes global counts instead, so a step's
    gradient is the same whatever the split over processes and accumulation steps.
    """
    # Only masked positions and [CLS] feed a loss, so the last layer runs for those alone.
    need = labels.ne(IGNORE_INDEX)  # (B, T)
    need[:, 0] = True  # [CLS]: the pooler's input
    seq, pos = _encode_at(model.bert, input_ids, attention_mask, token_type_ids, need)  # (B, Tq, H), (B, Tq)
    # Gather the N masked positions: (B*Tq,) -> (N,); index_select beats boolean indexing on CPU.
    flat_labels = labels.gather(1, pos).reshape(-1)  # (B*Tq,) labels of the kept positions
    idx = flat_labels.ne(IGNORE_INDEX).nonzero().squeeze(1)  # (N,) row-major: the order of (B, T)
    hidden = seq.reshape(-1, seq.shape[-1]).index_select(0, idx)  # (N, H)
    targets = flat_labels.index_select(0, idx)  # (N,)
    head = model.cls.predictions  # the full-vocabulary head, N rows only
    scores = F.linear(head.transform(hidden), head.decoder.weight)  # (N, V); the bias joins in fp32
    mlm_sum, mlm_correct = _SparseCrossEntropy.apply(scores, head.decoder.bias, targets)
    mlm_count = targets.new_tensor(targets.numel())
    loss = mlm_sum / (mlm_norm if mlm_norm is not None else mlm_count.clamp(min=1))
    zero = mlm_sum.new_zeros(())
    nsp_sum, nsp_count, nsp_correct = zero, mlm_count.new_zeros(()), mlm_count.new_zeros(())
    if next_sentence_label is not None:  # the trainer leaves it out for objective mlm
        pair_logits = model.cls.seq_relationship(model.bert.pooler(seq)).float()  # (B, 2): pools slot 0, [CLS]
        nsp_sum = F.cross_entropy(pair_logits, next_sentence_label, reduction="sum",
                                  ignore_index=IGNORE_INDEX)
        valid = next_sentence_label != IGNORE_INDEX  # (B,)
        nsp_count = valid.sum()
        nsp_correct = ((pair_logits.detach().argmax(-1) == next_sentence_label) & valid).sum()
        loss = loss + nsp_sum / (nsp_norm if nsp_norm is not None else nsp_count.clamp(min=1))
    return PretrainingLoss(loss, mlm_sum.detach(), mlm_count, mlm_correct, nsp_sum.detach(),
                           nsp_count, nsp_correct)


def _encode_at(bert: BertModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor, need: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states at the positions ``need`` marks: (B, Tq, H), and those positions (B, Tq).

    Every layer but the last runs at all T positions (the last one attends to all of them).
    The last runs its queries, attention output and feed-forward only at the Tq positions
    per row that a loss reads (about a fifth of them at a 15% mask rate): the same outputs
    there as the full stack, at a fraction of the last layer's cost. Rows are padded to the
    longest with positions that are not needed; they are computed and never read.
    """
    if bert.config.is_decoder:  # causal masks: transformers' own forward, at every position
        seq = bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        return seq, torch.arange(seq.shape[1], device=seq.device).expand(seq.shape[0], -1)
    x = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # (B, T, H)
    mask = create_bidirectional_mask(config=bert.config, inputs_embeds=x, attention_mask=attention_mask)
    if mask is not None:  # a padding mask: every query row is the same, (B, 1, 1, T) broadcasts
        mask = mask[:, :, :1, :]
    *layers, last = bert.encoder.layer
    for layer in layers:
        x = _layer(layer, x, mask)
    tq = int(need.sum(1).max())
    pos = torch.argsort((~need).to(torch.uint8), dim=1, stable=True)[:, :tq]  # (B, Tq) needed first, in order
    return _layer(last, x, mask, pos), pos


def _layer(layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
           pos: torch.Tensor | None = None) -> torch.Tensor:
    """A BertLayer on x (B, T, H), with one fused QKV matmul; outputs only at ``pos`` (B, Tq) if given."""
    attn = layer.attention.self
    batch, length, hidden = x.shape
    heads = (-1, attn.attention_head_size)
    if pos is None:  # queries, keys and values from one (B, T, H) x (H, 3H) matmul: one cast of x
        xq = x
        weight = torch.cat([attn.query.weight, attn.key.weight, attn.value.weight])  # (3H, H)
        bias = torch.cat([attn.query.bias, attn.key.bias, attn.value.bias])  # (3H,)
        q, k, v = F.linear(x, weight, bias).view(batch, length, 3, *heads).permute(2, 0, 3, 1, 4)
    else:
        xq = x.gather(1, pos.unsqueeze(-1).expand(batch, pos.shape[1], hidden))  # (B, Tq, H)
        q = attn.query(xq).view(batch, pos.shape[1], *heads).transpose(1, 2)  # (B, A, Tq, d)
        weight = torch.cat([attn.key.weight, attn.value.weight])  # (2H, H)
        bias = torch.cat([attn.key.bias, attn.value.bias])
        k, v = F.linear(x, weight, bias).view(batch, length, 2, *heads).permute(2, 0, 3, 1, 4)
    dropout = attn.dropout.p if attn.training else 0.0
    if attn.config._attn_implementation == "eager":
        context = _attend(q, k, v, mask, attn.scaling, dropout)  # (B, Tq, A, d)
    else:  # sdpa (flash kernels on CUDA) or any other registered kernel
        kernel = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
        context, _ = kernel(attn, q, k, v, mask, dropout=dropout, scaling=attn.scaling)  # (B, Tq, A, d)
    h = layer.attention.output(context.reshape(batch, xq.shape[1], -1), xq)  # dense, residual, LayerNorm
    return layer.feed_forward_chunk(h)  # (B, Tq, H)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
            scaling: float, dropout: float) -> torch.Tensor:
    """Matmul-softmax attention (B, A, Tq, d) x (B, A, T, d) -> (B, Tq, A, d), in q's dtype.

    transformers' eager kernel adds its fp32 mask to bf16 scores, so the (B, A, Tq, T) softmax
    runs in fp32 and is cast back for the next matmul; here scaling goes on the smaller q and
    the softmax stays bf16 under autocast (fp32 inside the kernel): 15% less time a layer.
    """
    scores = torch.matmul(q * scaling, k.transpose(-1, -2))  # (B, A, Tq, T)
    if mask is not None:  # additive: 0 or the dtype's minimum, (B, 1, Tq or 1, T)
        scores = scores + mask.to(scores.dtype)
    probs = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
    return torch.matmul(probs, v).transpose(1, 2)


class _SparseCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy and argmax hits of (N, V) scores plus a bias, in fp32 with one (N, V) buffer.

    The maths of ``F.cross_entropy(scores.float() + bias, targets, reduction="sum")``, cheaper
    on CPU: the bias is added in the pass that widens bf16 scores to fp32 (a bias in the
    matmul costs one more (N, V) pass); one row-wise softmax gives the gradient and, from its
    top class (probability >= 1/V, so it never underflows), the log-sum-exp; the hits come
    from row maxima (argmax over bf16 is a slow scalar loop); the backward subtracts the
    one-hot in place and scales and casts once, with no zero-filled one-hot buffer.
    """

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = scores.float() if bias is None else torch.add(scores, bias.float())  # (N, V) fp32
        probs = torch.softmax(logits, dim=-1)  # (N, V)
        top = probs.amax(dim=-1)  # (N,)
        lse = logits.amax(dim=-1) - top.log()  # (N,) log-sum-exp: top = exp(max logit - lse)
        column = targets.unsqueeze(1)
        correct = (probs.gather(1, column).squeeze(1) >= top).sum()  # a tie with the top counts as a hit
        ctx.save_for_backward(probs, targets)
        ctx.scores_dtype, ctx.has_bias = scores.dtype, bias is not None
        ctx.mark_non_differentiable(correct)
        return (lse - logits.gather(1, column).squeeze(1)).sum(), correct

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _: Any) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        probs, targets = ctx.saved_tensors  # d(sum CE)/d logits = softmax - one_hot(targets)
        probs[torch.arange(targets.numel(), device=targets.device), targets] -= 1.0
        probs.mul_(grad)
        grad_bias = probs.sum(0) if ctx.has_bias else None  # (V,) fp32, as the bias parameter
        return probs.to(ctx.scores_dtype), grad_bias, None  # one rounding to the scores' dtype


class PretrainingModule(nn.Module):
    """Wraps a BertForPreTraining so that DDP (and torch.compile) see one forward: the sparse loss."""

    def __init__(self, model: BertForPreTraining) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor, labels: torch.Tensor,
                next_sentence_label: torch.Tensor | None = None,
                mlm_norm: float | torch.Tensor | None = None,
                nsp_norm: float | torch.Tensor | None = None) -> PretrainingLoss:
        """See :func:`pretraining_loss`."""
        return pretraining_loss(self.model, input_ids, attention_mask, token_type_ids, labels,
                                next_sentence_label, mlm_norm, nsp_norm)
