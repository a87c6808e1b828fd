"""One `rmpipe serve` process speaks every framework's protocol with the same reward for the same
conversation, and keeps serving under abuse: real uvicorn, real HTTP, the real MiniLM head.

The bodies are built as each framework's source builds them (see tests/rmpipe/test_protocol.py
for the files and commits read): OpenRLHF v0.11.0 ``openrlhf/utils/agent.py`` (one sample a
request, empty lists to a second URL, the policy's templated prompt), VERL's
``verl/experimental/reward_loop/reward_loop.py`` (``/classify`` with the conversation rendered by
the chat template and ``activation: False``), TRL v1.9.0 ``GRPOTrainer._calculate_rewards``
(``reward_func(prompts=, completions=, completion_ids=, **columns)``).
"""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import polars as pl
import pytest

from rmpipe.protocol import KNOWN_DEFAULT_SYSTEMS
from rmpipe.serve import RewardModel, ServeSettings, ServerThread, build_app
from rmpipe.trl_reward import RmpipeReward

pytestmark = pytest.mark.slow  # the real MiniLM behind a live server

SYSTEM = KNOWN_DEFAULT_SYSTEMS[0]  # what a SmolLM2 policy's template adds to every prompt


@pytest.fixture(scope="module")
def model(served):
    params, head = served
    return RewardModel(params, head)


def chatml(turns, open_end=True) -> str:
    text = "".join(f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns)
    return text + ("<|im_start|>assistant\n" if open_end else "")


def test_every_route_gives_the_same_reward_and_stored_pairs_hit_the_store(served, model):
    params, head = served
    rows = pl.read_parquet(params.table_path).select("prompt", "response").unique(maintain_order=True)
    rows = rows.filter(~pl.col("prompt").str.starts_with("[{")).head(3)
    pairs = list(zip(rows["prompt"], rows["response"])) + [("Capital of Peru?", "Lima, since 1535.")]
    turns = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}] for p, _ in pairs]
    with ServerThread(build_app(model, ServeSettings())) as url, httpx.Client(base_url=url, timeout=120) as client:
        before = client.get("/info").json()["stats"]
        native = client.post("/rewards", json=[{"prompt": p, "response": r} for p, r in pairs]).json()
        mid = client.get("/info").json()["stats"]
        openrlhf, verl, vllm = [], [], []
        for t, (_, r) in zip(turns, pairs):  # one sample a request, as OpenRLHF and VERL send
            prompt = chatml(t)
            reply = client.post("/get_reward", json={"query": [prompt + r + "<|im_end|>"], "prompts": [prompt],
                                                     "labels": [None]})
            assert reply.status_code == 200, reply.text
            openrlhf.append(reply.json())
            whole = chatml([*t, {"role": "assistant", "content": r}], open_end=False)
            verl.append(client.post("/classify", json={"model": str(head), "input": whole,
                                                       "activation": False}).json())
            vllm.append(client.post("/classify", json={"input": [whole]}).json())
        after = client.get("/info").json()["stats"]
        second_url = client.post("/get_reward", json={"query": [], "prompts": [], "labels": []})
        trl_remote = RmpipeReward(url=url)
        conversational = trl_remote([t[1:] for t in turns], [[{"role": "assistant", "content": r}] for _, r in pairs])
        plain = trl_remote([p for p, _ in pairs], [r for _, r in pairs], completion_ids=None, trainer_state=None)
    logits, rewards = np.array(native["logits"]), np.array(native["rewards"])
    # the stored pairs cost no forward pass, through OpenRLHF's templated prompts too
    assert mid["store_hits"] - before.get("store_hits", 0) == 3
    assert after["store_hits"] - mid["store_hits"] == 3 * 3 and after["computed"] == mid["computed"]
    assert second_url.status_code == 200
    assert second_url.json() == {"rewards": [], "scores": [], "extra_logs": {"rmpipe_logit": []}}
    assert np.allclose([o["rewards"][0] for o in openrlhf], rewards, atol=1e-6)
    assert all(o["scores"] == o["rewards"] for o in openrlhf)
    assert np.allclose([o["extra_logs"]["rmpipe_logit"][0] for o in openrlhf], logits, atol=1e-6)
    assert np.allclose([v["data"][-1]["probs"][-1] for v in verl], logits, atol=1e-6)  # activation off
    assert np.allclose([v["data"][0]["probs"][0] for v in vllm], rewards, atol=1e-6)  # vLLM's default
    assert all(v["object"] == "list" and v["data"][0]["num_classes"] == 1 for v in vllm)
    assert np.allclose(conversational, rewards, atol=1e-6) and np.allclose(plain, rewards, atol=1e-6)
    local = RmpipeReward(head, params=params, logits=True)
    assert local.__name__ == "rmpipe_reward"
    assert np.allclose(local([t for t in turns], [[{"role": "assistant", "content": r}] for _, r in pairs]),
                       logits, atol=1e-6)
    assert len(set(np.round(rewards, 6))) > 1


def test_abuse_gets_a_one_line_4xx_and_the_server_keeps_serving(model):
    huge = "x" * (4 << 20)  # a 4 MB pair used to stall every client for seconds
    nested = b"[" * 200_000 + b"]" * 200_000
    with ServerThread(build_app(model, ServeSettings())) as url, httpx.Client(base_url=url, timeout=120) as client:
        for route, body in (("/rewards", [{"prompt": "hi", "response": huge}]),
                            ("/get_reward", {"query": ["hi" + huge], "prompts": ["hi"]}),
                            ("/classify", {"input": chatml([{"role": "user", "content": huge},
                                                            {"role": "assistant", "content": "ok"}], False)})):
            reply = client.post(route, json=body)
            assert reply.status_code == 413, (route, reply.text[:200])
            assert "over this server's limit of 65536 a pair (--max-pair-chars)" in reply.json()["error"]
        for route, body in (("/rewards", nested), ("/get_reward", b'{"query": ' + nested + b"}"),
                            ("/classify", b'{"input": ' + nested + b"}")):
            reply = client.post(route, content=body, headers={"content-type": "application/json"})
            assert reply.status_code == 400 and reply.json() == {"error": "body: JSON nested too deeply"}
        ok = client.post("/rewards", json=[{"prompt": "hi", "response": "hello"}])
        assert ok.status_code == 200 and len(ok.json()["rewards"]) == 1


def test_health_answers_while_a_big_scoring_request_is_in_flight(model):
    words = "the reward model reads every word of this long and winding response".split()
    pairs = [{"prompt": f"Question {i}: " + " ".join(words[(i + j) % len(words)] for j in range(40)),
              "response": " ".join(words[(i * j) % len(words)] for j in range(200))} for i in range(100)]
    done = {}
    with ServerThread(build_app(model, ServeSettings(max_request_pairs=1024))) as url:
        start = model.stats["pairs"]

        def big():
            done["reply"] = httpx.post(f"{url}/rewards", json=pairs, timeout=600)
            done["at"] = time.monotonic()

        thread = threading.Thread(target=big)
        thread.start()
        while model.stats["pairs"] - start < len(pairs):  # the big request has reached the scorer
            time.sleep(0.01)
        answered = []
        with httpx.Client(base_url=url, timeout=30) as client:
            while "at" not in done:
                reply = client.get("/health")
                answered.append((time.monotonic(), reply.status_code))
                time.sleep(0.05)
        thread.join(timeout=600)
    assert done["reply"].status_code == 200 and len(done["reply"].json()["rewards"]) == len(pairs)
    during = [code for at, code in answered if at < done["at"]]
    assert during and all(code == 200 for code in during)
