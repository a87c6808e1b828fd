"""The server's micro-batcher on the real MiniLM and a fitted head, driven on its own event loop
(no HTTP): which requests share a forward pass, and that each gets its own pairs' rewards."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rmpipe.app import Batcher
from rmpipe.serve import RewardModel

pytestmark = pytest.mark.slow  # the real MiniLM


@pytest.fixture(scope="module")
def model(served):
    params, head = served
    return RewardModel(params, head)


def pairs(tag: str, n: int) -> tuple[list[str], list[str]]:
    return ([f"{tag} question {i}: which train goes to the coast?" for i in range(n)],
            [f"{tag} answer {i}: the {i + 7}:15 from platform {i % 5}." for i in range(n)])


def unbatched(model, prompts, responses) -> np.ndarray:
    """The head's logits of one request embedded on its own, without the server's caches."""
    return model.head.logits(model.embedder(prompts, responses))


HOLD_MS = 600_000  # a max_wait_ms no test could sit out: waiting it even once fails the test
WITHIN_S = 60  # ... by timing out here first (a forward pass of a few pairs takes milliseconds)


def drive(model, scenario, max_batch: int = 64, max_wait_ms: float = HOLD_MS):
    """Run ``scenario(batcher)`` on a fresh event loop with a working batcher, for at most
    ``WITHIN_S`` seconds; its result, the seconds it took, and the most requests one
    micro-batch answered."""

    async def main():
        batcher = Batcher(model, max_batch=max_batch, max_wait_ms=max_wait_ms)
        worker = asyncio.create_task(batcher.run())
        loop = asyncio.get_running_loop()
        try:
            start = loop.time()
            out = await asyncio.wait_for(scenario(batcher), WITHIN_S)
            return out, loop.time() - start, batcher.largest
        finally:
            worker.cancel()
            batcher.worker.shutdown(wait=True)

    return asyncio.run(main())


def run_scenario(model, full, behind, late):
    """``full`` fills a micro-batch and goes at once, ``behind`` arrives with it but does not
    fit, ``late`` arrives once ``full`` is answered; the logits of each, in order."""

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.score(*full))
        second = asyncio.ensure_future(batcher.score(*behind))
        answered = await first
        third = asyncio.ensure_future(batcher.score(*late))
        return [answered, *await asyncio.gather(second, third)]

    got, _, largest = drive(model, scenario, max_batch=len(full[0]), max_wait_ms=1000)
    return got, largest


def test_a_request_left_behind_a_full_batch_waits_for_the_next_arrivals_and_each_gets_its_own_rewards(model):
    full, behind, late = pairs("full", 32), pairs("behind", 6), pairs("late", 5)
    late = (late[0] + behind[0][:1], late[1] + behind[1][:1])  # one pair of `behind` again
    expected = [unbatched(model, *x) for x in (full, behind, late)]
    before = dict(model.stats)
    got, largest = run_scenario(model, full, behind, late)
    delta = {k: model.stats[k] - before.get(k, 0) for k in ("micro_batches", "forward_batches", "computed")}
    # `behind` did not go alone as soon as the worker was free: it went with `late`
    assert delta["micro_batches"] == 2 and delta["forward_batches"] == 2 and largest == 2
    assert delta["computed"] == 32 + 6 + 5  # the repeated pair is embedded once
    for want, have in zip(expected, got):
        assert have.shape == want.shape
        assert np.abs(have - want).max() < 1e-4  # batchmates do not change a pair's reward
    assert have[-1] == got[1][0]  # the repeated pair: one value for both requests
    assert len(set(np.round(np.concatenate(got), 5))) > 30  # the rewards are the pairs' own, in order


def test_a_lone_client_is_answered_without_waiting_out_max_wait(model):
    """One client sending request after request: each is the only one in play, so the batcher
    sends it at once rather than holding it for ``max_wait_ms`` (ten minutes here) hoping for company."""

    async def scenario(batcher):
        for i in range(3):
            await batcher.score(*pairs(f"lone{i}", 2))

    before = model.stats["micro_batches"]
    _, elapsed, largest = drive(model, scenario)
    assert model.stats["micro_batches"] - before == 3 and largest == 1
    assert elapsed < WITHIN_S  # holding even one of them for max_wait would take ten minutes


def test_the_clients_a_batch_answered_are_waited_for_and_join_the_next_batch(model):
    """Three clients: the first request goes alone, two arrive while it runs. When it finishes,
    three requests were in play, so the two waiting are held until the first client is back
    (not the ten minutes of ``max_wait_ms``), and all three share the next forward pass."""

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.score(*pairs("one", 4)))
        while not batcher.largest:  # the first request is on the worker
            await asyncio.sleep(0.001)
        others = [asyncio.ensure_future(batcher.score(*pairs(tag, 4))) for tag in ("two", "three")]
        await first
        await asyncio.gather(batcher.score(*pairs("one again", 4)), *others)

    before = model.stats["micro_batches"]
    _, elapsed, largest = drive(model, scenario)
    assert model.stats["micro_batches"] - before == 2 and largest == 3
    assert elapsed < WITHIN_S


def test_the_busy_share_counts_the_worker_s_calls_inside_the_last_minute_only(model):
    """/info's worker_busy_share_last_60s: a call straddling the window's edge counts for its part
    inside it, an older one not at all, and a server younger than the window is measured over
    its life."""
    batcher = Batcher(model, max_batch=64, max_wait_ms=5)
    start = batcher.started
    assert batcher.busy_share(now=start) == 0.0
    batcher.calls.extend([(start + 1, start + 3), (start + 50, start + 56)])
    assert batcher.busy_share(now=start + 10) == pytest.approx(2 / 10)
    assert batcher.busy_share(now=start + 60) == pytest.approx(8 / 60)
    # 100 s on: the window is [40, 100]; the first call is gone, the second counts in full
    assert batcher.busy_share(now=start + 100) == pytest.approx(6 / 60)
    # 112 s on: the window is [52, 112]; 4 of the second call's 6 s are inside it
    assert batcher.busy_share(now=start + 112) == pytest.approx(4 / 60)
    batcher.worker.shutdown()
