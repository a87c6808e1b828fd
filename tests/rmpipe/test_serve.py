"""The reward server for real: uvicorn on a free loopback port, a real HTTP client, the real
MiniLM and a fitted head; rewards checked against `rmpipe score` on the same pairs."""

from __future__ import annotations

import json
import re
import threading

import httpx
import numpy as np
import polars as pl
import pytest

from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore
from pipeline.table import canonical_prompt
from rmpipe.serve import RewardModel, ServeSettings, ServerThread, build_app
from rmpipe.score import score

pytestmark = pytest.mark.slow  # the real MiniLM behind a live server

NEW = [("How do I reset my router?", "Unplug it for thirty seconds, then plug it back in."),
       ("What is the capital of Peru?", "Lima.")]


@pytest.fixture(scope="module")
def model(served):
    params, head = served
    return RewardModel(params, head)


def known_pairs(params, n=5):
    rows = pl.read_parquet(params.table_path).select("prompt", "response").unique(maintain_order=True).head(n)
    return list(zip(rows["prompt"], rows["response"]))


def scored(params, head, pairs, tmp_path, name):
    data = tmp_path / f"{name}.jsonl"
    pl.DataFrame({"prompt": [p for p, _ in pairs], "response": [r for _, r in pairs]}).write_ndjson(data)
    out, _ = score(params, head, data, tmp_path / f"{name}.rewards.parquet", progress=False)
    return pl.read_parquet(out)["reward"].to_numpy()


def test_native_and_openrlhf_rewards_equal_score_and_stored_pairs_cost_no_forward(served, model, tmp_path):
    params, head = served
    store_rows = EmbeddingStore(params.store_path("minilm")).rows
    pairs = known_pairs(params) + NEW
    before = dict(model.stats)
    with ServerThread(build_app(model, ServeSettings())) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/health").json() == {"status": "ok"}
        reply = client.post("/rewards", json=[{"prompt": p, "response": r} for p, r in pairs])
        assert reply.status_code == 200, reply.text
        native = np.array(reply.json()["rewards"])
        logits = np.array(reply.json()["logits"])
        stats = client.get("/info").json()["stats"]
        # OpenRLHF: full decoded sequences; the response follows the prompt, then an end marker.
        # A ChatML-templated prompt is taken back to its user turn.
        chatml = [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p, _ in pairs]
        body = {"query": [c + r + "<|im_end|>" for c, (_, r) in zip(chatml, pairs)],
                "prompts": chatml, "labels": [None] * len(pairs)}
        remote = client.post("/get_reward", json=body).json()
        plain = {"query": [p + r + "[PAD][PAD]" for p, r in pairs], "prompts": [p for p, _ in pairs]}
        remote_plain = client.post("/get_reward", json=plain).json()
    assert stats["store_hits"] - before.get("store_hits", 0) == 5  # the stored pairs: no forward
    assert stats["computed"] - before.get("computed", 0) == 2
    assert stats["forward_batches"] - before.get("forward_batches", 0) == 1
    assert EmbeddingStore(params.store_path("minilm")).rows == store_rows  # new pairs not written
    assert np.allclose(native, 1 / (1 + np.exp(-logits)))
    assert np.allclose(remote["rewards"], native, atol=1e-6) and remote["scores"] == remote["rewards"]
    assert np.allclose(remote["extra_logs"]["rmpipe_logit"], logits, atol=1e-6)
    assert np.allclose(remote_plain["rewards"], native, atol=1e-6)
    expected = scored(params, head, pairs, tmp_path, "pairs")  # embeds the two new pairs itself
    assert np.abs(native - expected).max() < 1e-5
    assert len(set(np.round(native, 6))) > 1  # the pairs get different rewards


def test_concurrent_requests_are_micro_batched(served, model, tmp_path):
    params, head = served
    pairs = [(f"Question number {i}: what should I cook tonight?", f"Try recipe {i}, it is quick.")
             for i in range(8)]
    results, barrier = {}, threading.Barrier(len(pairs))
    settings = ServeSettings(max_batch=64, max_wait_ms=300)
    before = dict(model.stats)

    def call(url, i):
        with httpx.Client(base_url=url, timeout=60) as client:
            barrier.wait(timeout=30)
            reply = client.post("/rewards", json=[{"prompt": pairs[i][0], "response": pairs[i][1]}])
            results[i] = (reply.status_code, reply.json())

    with ServerThread(build_app(model, settings)) as url:
        threads = [threading.Thread(target=call, args=(url, i)) for i in range(len(pairs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        info = httpx.get(f"{url}/info", timeout=30).json()
    assert all(code == 200 for code, _ in results.values()) and len(results) == len(pairs)
    micro = info["stats"]["micro_batches"] - before.get("micro_batches", 0)
    forwards = info["stats"]["forward_batches"] - before.get("forward_batches", 0)
    assert info["stats"]["largest_micro_batch_requests"] > 1
    assert micro < len(pairs) and forwards <= micro  # 8 requests, fewer batches
    # the worker's time in those forward passes, a share of this short-lived server's life
    assert 0 < info["stats"]["worker_busy_s"] and 0 < info["stats"]["worker_busy_share_last_60s"] <= 1
    served_rewards = np.array([results[i][1]["rewards"][0] for i in range(len(pairs))])
    assert np.abs(served_rewards - scored(params, head, pairs, tmp_path, "concurrent")).max() < 1e-5


BAD = [
    (b"{not json", 400, "not JSON"),
    (b'{"prompt": "a", "response": "b"}', 400, "expected a JSON list"),
    (b"[]", 400, "no items"),
    (b'["just a string"]', 400, r"pairs\[0\]: expected an object"),
    (b'[{"prompt": "a"}]', 400, r"pairs\[0\].response: missing"),
    (b'[{"prompt": "a", "response": 3}]', 400, r"pairs\[0\].response: expected a string"),
    (b'[{"prompt": "a", "response": "\\ud800"}]', 400, "lone surrogate"),
    (b'[{"prompt": [{"content": "hi"}], "response": "b"}]', 400, r"prompt\[0\]: a chat turn needs"),
    (json.dumps([{"prompt": "a", "response": "b"}] * 11).encode(), 413, "limit of 10"),
    (json.dumps([{"prompt": "a" * 5000, "response": "b"}]).encode(), 413, "over the limit"),
]
BAD_OPENRLHF = [
    ({"query": ["ab"]}, 400, "prompts: missing"),
    ({"query": ["ab", "cd"], "prompts": ["a"]}, 400, "1 items for 2 queries"),
    ({"query": ["xb"], "prompts": ["a"]}, 400, r"query\[0\] does not start with prompts\[0\]"),
    ({"query": "ab", "prompts": ["a"]}, 400, "query: expected a list"),
]


def test_bad_requests_get_a_one_line_4xx_and_the_server_keeps_serving(model):
    settings = ServeSettings(max_request_pairs=10, max_body_mb=4000 / (1 << 20))
    with ServerThread(build_app(model, settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        for body, status, reason in BAD:
            reply = client.post("/rewards", content=body, headers={"content-type": "application/json"})
            assert reply.status_code == status, (body[:60], reply.text)
            error = reply.json()["error"]
            assert "\n" not in error and re.search(reason, error), error
        for body, status, reason in BAD_OPENRLHF:
            reply = client.post("/get_reward", json=body)
            assert reply.status_code == status and re.search(reason, reply.json()["error"])
        assert client.get("/rewards").status_code == 405
        assert client.post("/nowhere", json=[]).status_code == 404
        ok = client.post("/rewards", json=[{"prompt": "a", "response": "b"}])
        assert ok.status_code == 200 and len(ok.json()["rewards"]) == 1


def test_info_names_the_backbone_method_and_card(model, served):
    _, head = served
    with ServerThread(build_app(model, ServeSettings(max_batch=7))) as url:
        info = httpx.get(f"{url}/info", timeout=30).json()
    assert info["backbone"] == "minilm" and info["method"] == "naive"
    assert info["spec_hash"] == EmbeddingStore(model.store_root).spec_hash
    assert info["card"]["method"] == "naive" and info["head"] == str(head)
    assert info["store"]["pairs"] == len(model.stored) >= 232  # the store as read at start-up
    assert info["limits"]["max_batch"] == 7


def test_a_head_of_another_embedding_function_is_refused_before_serving(served, tmp_path):
    import dataclasses

    from pipeline.config import EmbedParams

    params, head = served
    other = dataclasses.replace(params, embed=EmbedParams(backbones=("minilm",), store_dir=str(tmp_path / "emb"),
                                                          models_dir=str(tmp_path / "models")))
    store = EmbeddingStore.create(other.store_path("minilm"), backbone="minilm", spec={"model": "x"}, dim=384)
    with pytest.raises(RmpipeError, match=rf"trained on backbone 'minilm' .*spec {store.spec_hash}\)"):
        RewardModel(other, head)
    changed = dataclasses.replace(other, backbones={
        **other.backbones, "minilm": dataclasses.replace(other.backbones["minilm"], max_tokens=128)})
    with pytest.raises(RmpipeError, match=r"trained on backbone .minilm. .*but params \(backbones\.minilm\) gives spec"):
        RewardModel(changed, head)


def test_settings_are_checked_when_made():
    for kwargs, flag in (({"max_batch": 0}, "--max-batch"), ({"port": 70000}, "--port"),
                         ({"max_request_pairs": 0}, "--max-request-pairs"),
                         ({"max_wait_ms": -1}, "--max-wait-ms"), ({"max_body_mb": 0}, "--max-body-mb"),
                         ({"max_pair_chars": 0}, "--max-pair-chars"), ({"default_systems": (" ",)}, "--default-system")):
        with pytest.raises(RmpipeError, match=flag):
            ServeSettings(**kwargs)


def test_the_server_keys_a_pair_as_score_does_whatever_its_unicode_form(model):
    """NFC and NFD spellings of one pair, and chat turns spelled as JSON text, are one pair: the
    second and third requests cost no forward pass."""
    import unicodedata

    nfc = ("Où est le café ?", "Au coin de la rue, à gauche.")
    nfd = tuple(unicodedata.normalize("NFD", t) for t in nfc)
    assert nfd != nfc
    first = model.logits([nfc[0]], [nfc[1]])
    computed = model.stats["computed"]
    again = model.logits([nfd[0]], [nfd[1]])
    assert model.stats["computed"] == computed and again[0] == first[0]
    turns = [{"role": "user", "content": nfc[0]}]
    listed = model.logits([canonical_prompt(turns)], [nfc[1]])
    spaced = model.logits([json.dumps(turns)], [nfc[1]])  # the same turns, spelled otherwise
    assert model.stats["computed"] == computed + 1 and spaced[0] == listed[0]
