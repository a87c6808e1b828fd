"""The hf backend: a pair's embedding does not depend on its batchmates or the padding side;
MiniLM through it equals sentence-transformers; layers are selectable."""

import numpy as np
import pytest

from stages.embed.hf_backend import HFBackend, default_batch_tokens, token_batches
from stages.embed.text import PairEncoder

from tests.stages.embed.embed_helpers import make_pairs

pytestmark = pytest.mark.slow  # real MiniLM and tiny-Llama forward passes


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return HFBackend(str(tiny_llama_dir), pooling="last", device="cpu")


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return HFBackend(str(minilm_dir), pooling="mean", device="cpu")


def encoded(backend, chat, n=12, max_tokens=96):
    prompts, responses = zip(*make_pairs(n, seed=1))
    return PairEncoder(backend.tokenizer, max_tokens, chat_template=chat).encode(prompts, responses)


def test_token_batches_respect_the_budget_and_cover_every_row():
    lengths = [5, 50, 7, 100, 1, 30, 30]
    batches = token_batches(lengths, 120)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 120
    assert batches[0] == [3]  # longest first


def test_batch_budget_follows_the_device_unless_set(tiny_llama_dir):
    assert default_batch_tokens("cpu") < default_batch_tokens("cuda") == default_batch_tokens("cuda:1")
    unset = HFBackend(str(tiny_llama_dir), device="cpu")
    assert unset.batch_tokens == default_batch_tokens("cpu")
    assert unset.exec_info()["batch_tokens"] == default_batch_tokens("cpu")  # what the manifest records
    assert HFBackend(str(tiny_llama_dir), device="cpu", batch_tokens=300).batch_tokens == 300


@pytest.mark.parametrize("which,chat", [("llama", True), ("minilm", False)])
def test_embedding_does_not_depend_on_batchmates(which, chat, request):
    backend = request.getfixturevalue(which)
    enc = encoded(backend, chat)
    alone = np.stack([backend.encode([ids], [t] if enc.type_ids else None)[0]
                      for ids, t in zip(enc.ids, enc.type_ids or [None] * len(enc.ids))])
    for budget in (150, 4096):
        backend.batch_tokens = budget
        together = backend.encode(enc.ids, enc.type_ids)
        assert together.dtype == np.float32
        assert np.abs(together - alone).max() <= 1e-4
    backend.batch_tokens = 16384


@pytest.mark.parametrize("which,chat", [("llama", True), ("minilm", False)])
def test_left_and_right_padding_agree(which, chat, request):
    backend = request.getfixturevalue(which)
    enc = encoded(backend, chat, n=12)
    right = backend.encode(enc.ids, enc.type_ids)
    backend.padding_side = "left"
    try:
        left = backend.encode(enc.ids, enc.type_ids)
    finally:
        backend.padding_side = "right"
    assert np.abs(left - right).max() <= 1e-4


def test_minilm_equals_sentence_transformers(minilm, minilm_dir):
    from sentence_transformers import SentenceTransformer

    texts = ["a short one", "a somewhat longer sentence about reward models and feedback",
             "x", "users rarely leave feedback, and when they do it is noisy"]
    ids = [minilm.tokenizer(t)["input_ids"] for t in texts]
    ours = minilm.encode(ids)
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)  # the shipped model ends in Normalize
    st = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, batch_size=2)
    assert np.abs(ours - st).max() <= 1e-4


def test_layer_is_selectable(tiny_llama_dir, llama):
    enc = encoded(llama, True, n=4)
    last = llama.encode(enc.ids)
    first = HFBackend(str(tiny_llama_dir), pooling="last", layer=1, device="cpu").encode(enc.ids)
    assert first.shape == last.shape and np.abs(first - last).max() > 1e-3
