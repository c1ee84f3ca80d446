"""Head statistics with a tokenizer whose special tokens are not [CLS]/[SEP], through all three users.

The `heads` command, notebook 03's head-statistics cell and `progression.by_step` must measure
attention to the tokenizer's own special tokens. A tiny BERT is saved twice with the same
weights: once with the MiniLM tokenizer, once with that tokenizer's [CLS]/[SEP] renamed <s>/</s>
(same ids, so the model sees the same inputs). Renaming the special tokens must change no number.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import workbench
from workbench import cli
from workbench.analysis.attention import STAT_COLUMNS, load_attention_model
from workbench.analysis.progression import HEAD_COLUMNS, by_step
from workbench.config import AttentionConfig, ProbeConfig
from workbench.evaluation.splits import TaskData
from workbench.training.checkpoint import TRAINING_STATE

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (conftest)

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_attention.ipynb"


def _renamed(tokenizer):
    """``tokenizer`` with [CLS] -> <s> and [SEP] -> </s>: the same vocabulary ids, other special tokens."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = tokenizer.backend_tokenizer.to_str().replace('"[CLS]"', '"<s>"').replace('"[SEP]"', '"</s>"')
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(spec), cls_token="<s>", sep_token="</s>",
        pad_token=tokenizer.pad_token, unk_token=tokenizer.unk_token, mask_token=tokenizer.mask_token,
        model_max_length=tokenizer.model_max_length, model_input_names=list(tokenizer.model_input_names))


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_tokenizer, wiki_documents) -> dict[str, Path]:
    """The same random 2-layer, 2-head BERT as run dirs ``bert`` (MiniLM tokenizer) and ``renamed`` (<s>, </s>)."""
    from transformers import BertForPreTraining

    from workbench.training.model import preset_config

    root = tmp_path_factory.mktemp("heads")
    torch.manual_seed(0)
    config = preset_config("tiny", len(minilm_tokenizer), int(minilm_tokenizer.pad_token_id),
                           hidden_size=64, intermediate_size=256, num_attention_heads=2)
    model = BertForPreTraining(config)
    dirs = {}
    for name, tokenizer in (("bert", minilm_tokenizer), ("renamed", _renamed(minilm_tokenizer))):
        checkpoint = root / name / "checkpoint-2"  # a run dir with one kept checkpoint, for by_step
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        (checkpoint / TRAINING_STATE).write_bytes(b"")
        dirs[name] = checkpoint
    corpus = root / "corpus.txt"  # four real documents, a blank line between them
    corpus.write_text("\n\n".join(" ".join(doc[:6]) for doc in wiki_documents[:4]) + "\n")
    dirs["corpus"] = corpus
    return dirs


def test_the_renamed_tokenizer_has_other_special_tokens_and_the_same_ids(models):
    _, bert = load_attention_model(str(models["bert"]), device="cpu")
    _, renamed = load_attention_model(str(models["renamed"]), device="cpu")
    assert (renamed.cls_token, renamed.sep_token) == ("<s>", "</s>")
    pair = ("The cat sat on the mat.", "It was warm.")
    assert renamed(*pair)["input_ids"] == bert(*pair)["input_ids"]
    assert renamed(*pair)["token_type_ids"] == bert(*pair)["token_type_ids"]
    tokens = renamed.convert_ids_to_tokens(renamed(*pair)["input_ids"])
    assert tokens[0] == "<s>" and tokens.count("</s>") == 2 and "[CLS]" not in tokens


@pytest.fixture(scope="module")
def commands(models, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """`workbench heads` on both models: head_stats.csv read back, by model name."""
    frames = {}
    for name in ("bert", "renamed"):
        out = tmp_path_factory.mktemp("out") / name
        assert cli.main(["heads", "--model", str(models[name]), "--corpus", str(models["corpus"]), "--num-segments",
                         "4", "--max-seq-length", "32", "--seed", "9", "--out", str(out)]) == 0
        assert json.loads((out / "run.json").read_text())["command"] == "heads"
        frames[name] = pd.read_csv(out / "head_stats.csv")
    return frames


def test_heads_command_measures_the_tokenizers_own_special_tokens(commands):
    bert, renamed = commands["bert"], commands["renamed"]
    assert list(renamed.columns) == ["layer", "head", *STAT_COLUMNS]  # the csv's columns are unchanged
    assert len(renamed) == 4  # 2 layers x 2 heads
    # A random model spreads its attention: every head gives [CLS] and [SEP] a real share.
    assert (bert["attn_cls"] > 0.01).all() and (bert["attn_sep"] > 0.01).all()
    np.testing.assert_allclose(renamed[STAT_COLUMNS].to_numpy(), bert[STAT_COLUMNS].to_numpy(), atol=2e-5)


def _notebook_cell(models, name: str) -> dict:
    """Run notebook 03's head-statistics cell (the one that sets ``stats``) on model ``name``; its namespace."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells
                  if c["cell_type"] == "code" and "\nstats = " in "\n" + "".join(c["source"]))
    net, tokenizer = load_attention_model(str(models[name]), device="cpu")
    cfg = AttentionConfig(model=str(models[name]), corpus=str(models["corpus"]), num_segments=4,
                          max_seq_length=32, seed=9)
    namespace = {"wb": workbench, "cfg": cfg, "net": net, "tokenizer": tokenizer}
    exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    return namespace


def test_notebook_03_measures_the_tokenizers_own_special_tokens(models, commands):
    bert, renamed = _notebook_cell(models, "bert"), _notebook_cell(models, "renamed")
    assert (bert["stats"]["attn_cls"] > 0.01).all() and (bert["stats"]["attn_sep"] > 0.01).all()
    np.testing.assert_allclose(renamed["stats"][STAT_COLUMNS].to_numpy(), bert["stats"][STAT_COLUMNS].to_numpy(),
                               atol=1e-6)
    # The later cells use the segments and their attentions: the clusters, the explorer, the ablation.
    assert len(renamed["segs"]) == 4 and len(renamed["examples"]) == 4
    assert renamed["examples"][0].tokens[0] == "<s>"
    # The notebook and the `heads` command compute the same table.
    np.testing.assert_allclose(renamed["stats"][STAT_COLUMNS].to_numpy(), commands["renamed"][STAT_COLUMNS].to_numpy(),
                               atol=2e-5)


def test_notebook_03_bertviz_cell_finds_sentence_b_at_the_tokenizers_own_separator(models):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if c["cell_type"] == "code" and "b_start = " in "".join(c["source"]))
    for name in ("bert", "renamed"):
        net, tokenizer = load_attention_model(str(models[name]), device="cpu")
        cfg = AttentionConfig(model=str(models[name]), sentence="The cat sat.", sentence_b="It was warm.", layer=0)
        namespace = {"wb": workbench, "cfg": cfg, "net": net, "tokenizer": tokenizer}
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)
        tokens = namespace["pair"].tokens
        assert tokens[namespace["b_start"] - 1] == tokenizer.sep_token and tokens[namespace["b_start"]] == "it"


def _task(wiki_documents) -> TaskData:
    """Sentences of eight real articles, labelled by article parity; every third to validation and test."""
    rows = [(s, str(i % 2)) for i, doc in enumerate(wiki_documents[:8]) for s in doc[:9]]
    frame = pd.DataFrame(rows, columns=["text", "label"])
    splits = {name: frame.iloc[k::3].reset_index(drop=True) for k, name in enumerate(("train", "validation", "test"))}
    return TaskData("parity", splits, ["0", "1"], False)


def test_by_step_measures_the_tokenizers_own_special_tokens(models, wiki_documents):
    task = _task(wiki_documents)
    cfg = ProbeConfig(probe_seeds=2, progression_segments=4, probe_max_length=32)
    bert = by_step(models["bert"].parent, task, cfg, baseline=False, l2_grid=(1.0,)).frame
    renamed = by_step(models["renamed"].parent, task, cfg, baseline=False, l2_grid=(1.0,)).frame
    heads = [f"heads_{c}" for c in HEAD_COLUMNS]
    assert (bert["heads_attn_cls"] > 0.01).all() and (bert["heads_attn_sep"] > 0.01).all()
    np.testing.assert_allclose(renamed[heads].to_numpy(), bert[heads].to_numpy(), atol=1e-6)
    assert renamed["probe_accuracy"].tolist() == bert["probe_accuracy"].tolist()
