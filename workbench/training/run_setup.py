"""Set-up steps of a pretraining run: its data (checked against the config) and its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import BertForPreTraining

from ..config import DataConfig, TrainConfig
from ..data.examples import PretrainingData, load_prepared, prepare_dataset
from ..errors import WorkbenchError
from .engine import resolve_attention
from .model import build_model, quiet_transformers

__all__ = ["build_pretraining_model", "check_data", "load_data", "majority_accuracy", "unigram_token"]


def load_data(cfg: TrainConfig, acc: Accelerator) -> PretrainingData:
    """``cfg.data`` prepared earlier, or the builtin corpus prepared now for ``cfg.objective``."""
    with acc.main_process_first():  # one process builds, the others load its cache
        if cfg.data:
            return load_prepared(cfg.data)
        objective = "nsp" if cfg.objective == "auto" else cfg.objective
        return prepare_dataset(DataConfig(objective=objective))


def check_data(cfg: TrainConfig, data: PretrainingData, n_train: int, n_val: int, global_batch: int,
               world: int) -> str:
    """The data's objective (nsp|sop|mlm), after checking it and the split sizes against ``cfg``."""
    have = data.stats.get("objective", "nsp")
    if cfg.objective not in ("auto", have):
        raise WorkbenchError(
            f"--objective {cfg.objective} but the data in {data.path} was prepared for {have}; "
            f"prepare it with `workbench prepare --objective {cfg.objective}` or pass --objective auto"
        )
    if n_train < global_batch:
        raise WorkbenchError(
            f"the training split has {n_train} examples, fewer than one global batch of {global_batch} "
            f"(batch_size {cfg.batch_size} x {world} process(es) x grad_accum {cfg.grad_accum}); "
            "lower --batch-size or prepare more data"
        )
    if n_val == 0:
        raise WorkbenchError(
            f"the data in {data.path} has no validation examples; prepare it with --validation-fraction 0.05"
        )
    return have


def unigram_token(data: PretrainingData) -> int:
    """The most frequent non-special token of the training split (the unigram baseline)."""
    tokenizer = data.tokenizer
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    column = data.dataset["train"].data.table.column("input_ids")
    for chunk in column.chunks:  # flat token ids chunk by chunk: memory stays bounded
        ids = chunk.flatten().to_numpy()
        counts += np.bincount(ids, minlength=len(counts))[: len(counts)]
    counts[tokenizer.all_special_ids] = 0
    return int(counts.argmax())


def majority_accuracy(labels: np.ndarray) -> float:
    """Chance level of the sentence task: always guessing the commoner label (0 or 1)."""
    return float(max(np.mean(labels == 0), np.mean(labels == 1)))


def build_pretraining_model(cfg: TrainConfig, data: PretrainingData, objective: str, device: torch.device,
                            resume_from: Path | None, verbose: bool) -> BertForPreTraining:
    """The model to train: loaded from ``resume_from``, or built from ``cfg.preset``/``cfg.init``."""
    if resume_from is not None:
        with quiet_transformers():
            model = BertForPreTraining.from_pretrained(str(resume_from), attn_implementation="sdpa",
                                                       dtype=torch.float32)
    else:
        model = build_model(cfg.preset, data.tokenizer, cfg.init or None, dropout=cfg.dropout, verbose=verbose)
    model.set_attn_implementation(resolve_attention(cfg.attention, device))
    limit = model.config.max_position_embeddings
    longest = int(data.stats.get("max_seq_length", 0))
    if longest > limit:
        raise WorkbenchError(
            f"the data has sequences of {longest} tokens but the model has {limit} positions; "
            f"prepare the data with --max-seq-length {limit}"
        )
    if objective == "mlm":  # no sentence task: the pooler and NSP head get no gradient
        for p in (*model.bert.pooler.parameters(), *model.cls.seq_relationship.parameters()):
            p.requires_grad_(False)
    model.train()
    if cfg.compile:  # in place, so state_dict keys stay those of BertForPreTraining
        for layer in model.bert.encoder.layer:  # the modules pretraining_loss calls: all but the attention maths
            for module in (layer.attention.output, layer.intermediate, layer.output):
                module.compile()
    return model
