"""The reward server's HTTP app: routes, micro-batching, and the limits that keep it serving.

- Concurrent requests are micro-batched: when the worker is free, the waiting requests are
  held until the clients it has just answered are back, ``max_batch`` pairs wait, or
  ``max_wait_ms`` has passed, and scored in one call, the new pairs among them in as few
  backbone forward passes as the token budget allows. One worker thread runs them in turn.
- The event loop only reads bodies and answers: decoding JSON and turning it into pairs runs on a
  thread too, so one large request does not hold up ``/health`` or other clients.
- Abuse is a one-line 4xx: a body over ``--max-body-mb`` or a pair over ``--max-pair-chars``
  (413), JSON nested deeper than the decoder's recursion limit (400), a malformed body (400).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pipeline.errors import RmpipeError
from pipeline.heads import sigmoid
from rmpipe.protocol import BadRequest, classify_pairs, native_pairs, openrlhf_pairs


BUSY_WINDOW_S = 60.0  # the span /info's worker_busy_share_last_60s covers


class Batcher:
    """Collects concurrent requests into micro-batches scored by one worker thread."""

    def __init__(self, model, max_batch: int, max_wait_ms: float):
        self.model, self.max_batch, self.wait = model, max_batch, max_wait_ms / 1000
        self.pending: collections.deque = collections.deque()
        self.arrived = asyncio.Event()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmpipe-score")
        self.largest = 0  # most requests ever answered by one micro-batch
        self.expected = 1  # requests in play when the worker last finished (see _gather)
        self.freed_at = float("-inf")  # when it did, on the event loop's clock
        self.started = time.monotonic()
        self.calls: collections.deque = collections.deque(maxlen=65_536)  # the worker's (start, end)
        self.busy_s = 0.0  # the worker's seconds in calls, since start

    async def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        if not prompts:
            return np.empty(0, dtype=np.float32)
        future = asyncio.get_running_loop().create_future()
        self.pending.append((prompts, responses, future))
        self.arrived.set()
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        inflight: collections.deque = collections.deque()  # the batch on the worker, and one queued behind it
        while True:
            while not self.pending:
                await self.arrived.wait()
                self.arrived.clear()
            while len(inflight) >= 2:
                await inflight.popleft()
            await self._gather(loop, inflight)
            batch, size = [], 0
            while self.pending and (not batch or size + len(self.pending[0][0]) <= self.max_batch):
                item = self.pending.popleft()
                batch.append(item)
                size += len(item[0])
            inflight.append(asyncio.ensure_future(self._answer(loop, batch)))
            while inflight and inflight[0].done():
                inflight.popleft()

    async def _gather(self, loop, inflight) -> None:
        """Hold the batch open until ``max_batch`` pairs wait, or, once the worker is free, until
        as many requests wait as were in play when it last finished (the requests it answered,
        whose clients send their next ones within milliseconds, and those already waiting), or
        ``max_wait_ms`` has passed since then. So a lone client never waits, and four clients
        share one forward pass rather than splitting into two halves that take turns: on a CPU
        a pair costs ~25% more in a forward pass of 16 pairs than in one of 64. While the worker
        is busy a full batch is queued behind the running one, so the worker never waits for
        the event loop between full batches (docs/serving.md#throughput)."""
        deadline = loop.time() + self.wait
        while sum(len(p) for p, _, _ in self.pending) < self.max_batch:
            busy = [t for t in inflight if not t.done()]
            if not busy:
                if len(self.pending) >= self.expected:
                    return
                deadline = max(deadline, self.freed_at + self.wait)
                if deadline <= loop.time():
                    return
            self.arrived.clear()
            waits = [asyncio.ensure_future(self.arrived.wait()), *busy]
            done, _ = await asyncio.wait(waits, timeout=None if busy else deadline - loop.time(),
                                         return_when=asyncio.FIRST_COMPLETED)
            waits[0].cancel()
            if not done:
                return

    def _timed(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """The model's logits, on the worker thread (the only writer of ``calls`` and ``busy_s``)."""
        start = time.monotonic()
        try:
            return self.model.logits(prompts, responses)
        finally:
            end = time.monotonic()
            self.calls.append((start, end))
            self.busy_s += end - start

    def busy_share(self, now: float | None = None) -> float:
        """The share of the last ``BUSY_WINDOW_S`` seconds (or of the time since start, if
        shorter) the worker spent scoring. Near 1, the clients wait on the server (add a replica or
        a faster device); well under 1, the server waits on its clients
        (docs/serving.md#is-the-server-the-bottleneck)."""
        now = time.monotonic() if now is None else now
        since = max(now - BUSY_WINDOW_S, self.started)
        if now <= since:
            return 0.0
        busy = sum(max(min(end, now) - max(start, since), 0.0) for start, end in list(self.calls))
        return busy / (now - since)

    def _finished(self, loop, batch: list) -> None:
        self.expected = len(batch) + len(self.pending)
        self.freed_at = loop.time()

    async def _answer(self, loop, batch: list) -> None:
        prompts = [p for item in batch for p in item[0]]
        responses = [r for item in batch for r in item[1]]
        self.largest = max(self.largest, len(batch))
        try:
            logits = await loop.run_in_executor(self.worker, self._timed, prompts, responses)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._finished(loop, batch)
        start = 0
        for p, _, future in batch:
            if not future.done():  # the client may have gone
                future.set_result(logits[start:start + len(p)])
            start += len(p)


def decode(raw: bytes, parse):
    """Body bytes -> JSON -> ``parse(body)``; run on a thread, off the event loop."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest("body: JSON nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"body is not JSON ({str(exc).splitlines()[0][:120]})") from None
    return parse(body)


def floats(values: np.ndarray) -> list:
    """JSON numbers, ``None`` where a pair could not be scored (NaN)."""
    return [None if np.isnan(v) else v for v in values.astype(np.float64).tolist()]


def build_app(model, settings):
    """The FastAPI app over ``model`` (:class:`rmpipe.serve.RewardModel`); the batcher runs for
    the app's lifetime."""
    state: dict = {}
    canon = model.canon(settings)
    limit = settings.max_request_pairs

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        batcher = Batcher(model, settings.max_batch, settings.max_wait_ms)
        task = asyncio.create_task(batcher.run())
        state["batcher"] = batcher
        try:
            yield
        finally:
            task.cancel()
            batcher.worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="rmpipe reward server", lifespan=lifespan)

    async def body(request: Request, parse):
        cap = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise BadRequest(f"body of {int(declared)} bytes is over the limit of {cap} (--max-body-mb)", 413)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > cap:
                raise BadRequest(f"body is over the limit of {cap} bytes (--max-body-mb)", 413)
        return await asyncio.to_thread(decode, bytes(raw), parse)

    async def logits_of(prompts: list[str], responses: list[str]) -> np.ndarray:
        model.stats["requests"] += 1
        model.stats["pairs"] += len(prompts)
        return await state["batcher"].score(prompts, responses)

    def refuse_missing(logits: np.ndarray) -> None:
        missing = np.flatnonzero(np.isnan(logits))
        if len(missing):
            raise BadRequest(f"{model.missing_note(len(missing))} (item {int(missing[0])} first)", 422)

    @app.exception_handler(BadRequest)
    async def refused(_request, exc: BadRequest):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RmpipeError)
    async def store_trouble(_request, exc: RmpipeError):  # e.g. a shard corrupted under us
        return JSONResponse({"error": str(exc)}, status_code=500)

    @app.post("/rewards")
    async def native(request: Request):
        """A JSON list of {prompt, response} -> {"rewards": [...], "logits": [...]} in order; a
        pair a vectors backbone has no vector for is null, listed in "missing"."""
        logits = await logits_of(*await body(request, lambda b: native_pairs(b, limit, canon)))
        out = {"rewards": floats(sigmoid(logits)), "logits": floats(logits)}
        missing = np.flatnonzero(np.isnan(logits))
        if len(missing):
            out.update(missing=missing.tolist(), note=model.missing_note(len(missing)))
        return out

    @app.post("/get_reward")
    async def openrlhf(request: Request):
        """OpenRLHF's remote reward model: {"query", "prompts", "labels"} -> {"rewards", "scores",
        "extra_logs"}; empty lists (another server's share) are answered with empty lists."""
        logits = await logits_of(*await body(request, lambda b: openrlhf_pairs(b, limit, canon)))
        refuse_missing(logits)
        rewards = floats(sigmoid(logits))
        return {"rewards": rewards, "scores": rewards, "extra_logs": {"rmpipe_logit": floats(logits)}}

    @app.post("/classify")
    async def classify(request: Request):
        """vLLM's classify API: one ``data`` item a conversation, ``probs`` = [σ(logit)], or
        [logit] with ``use_activation: false``."""
        prompts, responses, activation = await body(request, lambda b: classify_pairs(b, limit, canon))
        logits = await logits_of(prompts, responses)
        refuse_missing(logits)
        values = floats(sigmoid(logits) if activation else logits)
        return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": str(model.head.folder),
                "data": [{"index": i, "label": "reward", "probs": [v], "num_classes": 1}
                         for i, v in enumerate(values)],
                "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0}}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        batcher = state["batcher"]
        counters = {"largest_micro_batch_requests": batcher.largest, **model.stats,
                    "worker_busy_s": round(batcher.busy_s, 3),
                    "worker_busy_share_last_60s": round(batcher.busy_share(), 3)}
        return {**model.info(), "limits": dataclasses.asdict(settings),
                "default_systems": list(canon.default_systems), "stats": counters}

    return app
