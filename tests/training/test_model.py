"""Presets, model construction and the sparse MLM + NSP loss."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig

from workbench.builtin import minilm_path
from workbench.config import PRESET_NAMES, MaskingConfig
from workbench.data.masking import PretrainingCollator
from workbench.data.tokenizer import train_tokenizer
from workbench.errors import WorkbenchError
from workbench.training.model import (
    PRESETS,
    PretrainingModule,
    _SparseCrossEntropy,
    build_model,
    preset_config,
    pretraining_loss,
)

# Turc et al. 2019, Table 6 (L layers, H hidden, A heads).
TURC = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "medium": (8, 512, 8),
        "base": (12, 768, 12)}


def test_presets_map_one_to_one_onto_bert_config():
    assert set(PRESETS) == set(TURC) == set(PRESET_NAMES)
    for name, fields in PRESETS.items():
        config = BertConfig(**fields)
        for key, value in fields.items():  # every preset field is a BertConfig field
            assert getattr(config, key) == value, (name, key)
        layers, hidden, heads = TURC[name]
        assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == TURC[name]
        assert config.intermediate_size == 4 * hidden
        assert config.max_position_embeddings == 512 and config.type_vocab_size == 2
        assert layers >= 1 and heads >= 1


def test_unknown_preset_is_a_one_line_error():
    with pytest.raises(WorkbenchError, match="unknown preset 'huge'"):
        preset_config("huge", 100)


def test_scratch_model_is_sized_for_the_tokenizer(minilm_tokenizer):
    model = build_model("tiny", minilm_tokenizer)
    assert model.config.vocab_size == len(minilm_tokenizer)
    assert model.config.pad_token_id == minilm_tokenizer.pad_token_id
    assert model.config._attn_implementation == "sdpa"
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


@pytest.fixture(scope="module")
def batch(minilm_tokenizer, wiki_documents):
    """A real masked NSP-style batch: 6 rows of Wikipedia sentence pairs of unequal length."""
    docs = [d for d in wiki_documents if len(d) >= 4][:6]
    examples = []
    for i, doc in enumerate(docs):
        enc = minilm_tokenizer(doc[0], doc[1 + i % 3], truncation=True, max_length=40 + 8 * i)
        examples.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                         "next_sentence_label": i % 2})
    collator = PretrainingCollator(minilm_tokenizer, MaskingConfig(mask_rate=0.2), seed=0)
    return collator(examples)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_sparse_head_loss_equals_full_head_loss(minilm_tokenizer, batch, attention):
    torch.manual_seed(0)
    model = build_model("mini", minilm_tokenizer, dropout=0.0).eval()
    model.set_attn_implementation(attention)
    assert batch["attention_mask"].min() == 0  # padded rows: the last layer's key mask matters
    sparse = pretraining_loss(model, **batch)
    full = model(**batch)  # BertForPreTraining: full-vocabulary head on every position
    torch.testing.assert_close(sparse.loss, full.loss, rtol=1e-5, atol=1e-5)
    assert int(sparse.mlm_count) == int((batch["labels"] != -100).sum())
    assert int(sparse.nsp_count) == batch["input_ids"].shape[0]
    # Same gradients as well: the sparse head is an optimisation, not a different objective.
    grads = torch.autograd.grad(sparse.loss, list(model.parameters()))
    ref = torch.autograd.grad(full.loss, list(model.parameters()))
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_decoder_config_takes_the_full_forward(minilm_tokenizer, batch):
    torch.manual_seed(0)
    model = build_model("tiny", minilm_tokenizer, dropout=0.0).eval()
    model.config.is_decoder = model.bert.config.is_decoder = True  # causal masks: not the sparse path
    torch.testing.assert_close(pretraining_loss(model, **batch).loss, model(**batch).loss, rtol=1e-5, atol=1e-5)


def test_mlm_only_loss_and_counts(minilm_tokenizer, batch):
    torch.manual_seed(0)
    model = build_model("tiny", minilm_tokenizer, dropout=0.0).eval()
    inputs = {k: v for k, v in batch.items() if k != "next_sentence_label"}
    out = pretraining_loss(model, **inputs)
    logits = model(**inputs).prediction_logits  # (B, T, V)
    ref = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), batch["labels"].view(-1))
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.mlm_loss, ref, rtol=1e-5, atol=1e-5)
    assert int(out.nsp_count) == 0 and float(out.nsp_loss_sum) == 0.0
    masked = batch["labels"] != -100
    assert int(out.mlm_correct) == int((logits.argmax(-1)[masked] == batch["labels"][masked]).sum())
    # the module wrapper (what DDP sees) computes the same thing
    torch.testing.assert_close(PretrainingModule(model)(**inputs).loss, out.loss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_cross_entropy_matches_torch_in_fp32_and_bf16(dtype):
    torch.manual_seed(0)
    scores = (torch.randn(37, 503) * 4).to(dtype).requires_grad_()  # (N, V), N masked tokens
    bias = torch.randn(503, requires_grad=True)  # fp32, as the decoder's bias parameter
    targets = torch.randint(0, 503, (37,))
    targets[:5] = (scores.detach().float() + bias.detach()).argmax(-1)[:5]  # five sure hits
    total, hits = _SparseCrossEntropy.apply(scores, bias, targets)
    grad, grad_bias = torch.autograd.grad(total * 0.25, (scores, bias))  # a non-unit upstream gradient
    logits = scores.float() + bias
    ref_total = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    ref_grad, ref_bias = torch.autograd.grad(ref_total * 0.25, (scores, bias))
    torch.testing.assert_close(total, ref_total, rtol=1e-6, atol=1e-4)
    assert grad.dtype == dtype and grad_bias.dtype == torch.float32  # each in its input's dtype
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=1e-6)
    torch.testing.assert_close(grad_bias, ref_bias, rtol=1e-5, atol=1e-6)
    assert int(hits) == int((logits.detach().argmax(-1) == targets).sum()) >= 5
    no_bias, _ = _SparseCrossEntropy.apply(scores, None, targets)
    torch.testing.assert_close(no_bias, torch.nn.functional.cross_entropy(scores.float(), targets, reduction="sum"))
    extreme = torch.zeros(3, 10, dtype=dtype)  # logit gaps of hundreds: no underflow to inf or nan
    extreme[0, 0], extreme[1, 5] = 200.0, -300.0
    far = torch.tensor([3, 5, 1])
    torch.testing.assert_close(_SparseCrossEntropy.apply(extreme, None, far)[0],
                               torch.nn.functional.cross_entropy(extreme.float(), far, reduction="sum"))
    empty = torch.zeros(0, 503, dtype=dtype, requires_grad=True)  # a batch with nothing masked
    total, hits = _SparseCrossEntropy.apply(empty, bias, torch.zeros(0, dtype=torch.long))
    total.backward()
    assert float(total.detach()) == 0.0 and int(hits) == 0 and empty.grad.shape == (0, 503)


def test_custom_norms_scale_the_loss(minilm_tokenizer, batch):
    model = build_model("tiny", minilm_tokenizer, dropout=0.0).eval()
    out = pretraining_loss(model, **batch, mlm_norm=10.0, nsp_norm=4.0)
    torch.testing.assert_close(out.loss, out.mlm_loss_sum / 10.0 + out.nsp_loss_sum / 4.0)


def test_init_from_builtin_minilm_loads_the_encoder_and_ties_the_decoder(minilm_tokenizer, capsys):
    model = build_model("tiny", minilm_tokenizer, init="builtin:minilm", dropout=0.0)
    message = capsys.readouterr().out
    assert "initialised BertForPreTraining from builtin:minilm" in message
    assert "tied to the word embeddings" in message and "cls.seq_relationship.*" in message
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384  # not tiny
    assert model.config._attn_implementation == "sdpa"
    reference = load_file(str(minilm_path() / "model.safetensors"))
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        torch.testing.assert_close(model.bert.state_dict()[key], reference[key])
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_init_checkpoint_with_other_vocab_is_refused(wiki_documents):
    sentences = [s for doc in wiki_documents[:5] for s in doc]
    small = train_tokenizer(sentences, vocab_size=400)
    with pytest.raises(WorkbenchError, match=r"vocab_size 30522 but the tokenizer has \d+ tokens") as info:
        build_model("tiny", small, init="builtin:minilm")
    assert "\n" not in str(info.value)


def test_init_missing_dir_is_a_one_line_error(minilm_tokenizer, tmp_path):
    with pytest.raises(WorkbenchError, match="does not exist"):
        build_model("tiny", minilm_tokenizer, init=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="could not read the config"):
        build_model("tiny", minilm_tokenizer, init=str(tmp_path / "empty"))
