"""BERT for pretraining: size presets, model construction, and the sparse MLM + NSP/SOP loss.

The presets are the compact sizes of Turc et al. (2019), "Well-Read Students Learn Better";
each preset's fields are :class:`transformers.BertConfig` arguments, one to one. The loss runs
the prediction head only at masked positions (as Cramming does): for small models the
full-vocabulary head over every position costs more than the encoder itself.
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
from transformers import BertConfig, BertForPreTraining, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from .builtin import resolve_pretrained
from .errors import WorkbenchError

__all__ = [
    "PRESETS",
    "PretrainingLoss",
    "PretrainingModule",
    "build_model",
    "pretraining_loss",
    "preset_config",
    "quiet_transformers",
]

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


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
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WorkbenchError(f"could not load --init {init!r}: {reason}; pass a BERT checkpoint dir or builtin:minilm") from None
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
    out = model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    seq = out.last_hidden_state  # (B, T, H)
    # Gather the N masked positions: (B*T,) -> (N,); index_select beats boolean indexing on CPU.
    flat_labels = labels.reshape(-1)
    idx = flat_labels.ne(IGNORE_INDEX).nonzero().squeeze(1)  # (N,)
    hidden = seq.reshape(-1, seq.shape[-1]).index_select(0, idx)  # (N, H)
    targets = flat_labels.index_select(0, idx)  # (N,)
    scores = model.cls.predictions(hidden)  # (N, V): the full-vocabulary head, N rows only
    mlm_correct = (scores.detach().argmax(-1) == targets).sum()  # on bf16 scores: half the bytes
    mlm_sum = F.cross_entropy(scores.float(), targets, reduction="sum")  # fp32 log-softmax
    mlm_count = targets.new_tensor(targets.numel())
    loss = mlm_sum / (mlm_norm if mlm_norm is not None else mlm_count.clamp(min=1))
    zero = mlm_sum.new_zeros(())
    nsp_sum, nsp_count, nsp_correct = zero, mlm_count.new_zeros(()), mlm_count.new_zeros(())
    if next_sentence_label is not None:  # the trainer leaves it out for objective mlm
        pair_logits = model.cls.seq_relationship(out.pooler_output).float()  # (B, 2)
        nsp_sum = F.cross_entropy(pair_logits, next_sentence_label, reduction="sum",
                                  ignore_index=IGNORE_INDEX)
        valid = next_sentence_label != IGNORE_INDEX  # (B,)
        nsp_count = valid.sum()
        nsp_correct = ((pair_logits.detach().argmax(-1) == next_sentence_label) & valid).sum()
        loss = loss + nsp_sum / (nsp_norm if nsp_norm is not None else nsp_count.clamp(min=1))
    return PretrainingLoss(loss, mlm_sum.detach(), mlm_count, mlm_correct, nsp_sum.detach(),
                           nsp_count, nsp_correct)


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
