"""``rmpipe serve --head HEAD``: a head as an HTTP reward server (FastAPI on uvicorn).

Routes: ``POST /rewards`` (native: a list of ``{prompt, response}``), ``POST /get_reward``
(OpenRLHF's ``--remote_rm_url`` protocol, see :mod:`rmpipe.protocol`), ``GET /health``,
``GET /info`` (backbone key, method, the head's card, limits, counters).

- Before serving, the head is checked against the embedding store's key and against the key of
  the params' backbone (the function that will embed new pairs): a mismatch is refused at start.
- Pairs already in the store cost no forward pass: at start-up the head scores every stored pair
  once (one pass over the store, shard by shard) and keeps only the logits (~100 bytes a pair).
- New pairs go through the backbone in the server and are kept in a bounded in-memory cache
  (``RECENT`` pairs); they are **not written to the store**: RL rollouts are mostly one-off, a
  shard per micro-batch would fragment the store, and a read-only store can still be served.
  ``rmpipe embed``/``score`` remain the way to add pairs to it.
- Concurrent requests are micro-batched: the first waiting request opens a window of
  ``max_wait_ms``; what arrived by then (up to ``max_batch`` pairs) is scored in one call, with
  at most one backbone forward pass for the new pairs among them. One worker thread runs them in
  turn; the event loop only parses and answers.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pipeline.config import Params
from pipeline.errors import RmpipeError
from pipeline.heads import load_head, sigmoid
from pipeline.store import MANIFEST, EmbeddingStore
from pipeline.table import make_pair_id, normal_pair
from rmpipe.protocol import END_MARKERS, BadRequest, native_pairs, openrlhf_pairs
from stages.embed import backbones
from stages.embed.run import Embedder

RECENT = 65_536  # new pairs whose logits the server remembers


@dataclass(frozen=True)
class ServeSettings:
    """The server's knobs (CLI flags), checked when made."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64  # pairs a micro-batch collects at most
    max_wait_ms: float = 5.0  # how long the first waiting request holds the batch open
    max_request_pairs: int = 1024  # a request with more is refused (413)
    max_body_mb: float = 16.0  # a body larger than this is refused (413)

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise RmpipeError(f"--port {self.port}: not a TCP port (0-65535)")
        for name in ("max_batch", "max_request_pairs"):
            if getattr(self, name) < 1:
                raise RmpipeError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if not 0 <= self.max_wait_ms <= 1000:
            raise RmpipeError(f"--max-wait-ms {self.max_wait_ms}: must be within 0-1000")
        if self.max_body_mb <= 0:
            raise RmpipeError(f"--max-body-mb {self.max_body_mb}: must be positive")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))


class RewardModel:
    """The head, its stored pairs' logits and its backbone, loaded and checked once. Not
    thread-safe: the server calls :meth:`logits` from one worker thread."""

    def __init__(self, params: Params, head_dir: str | Path):
        self.head = load_head(head_dir)
        backbone = self.head.backbone
        # the key before the weights: a GGUF backbone is dequantised only for a head that fits it
        self.head.check_key(backbones.store_key(params.backbone(backbone), backbone),
                            f"params (backbones.{backbone})")
        self.embedder = Embedder(params, backbone)  # resolves the weights; loads nothing yet
        root = params.store_path(backbone)
        self.store_root = root
        self.stored: dict[str, float] = {}
        if (root / MANIFEST).exists():
            store = EmbeddingStore(root)
            self.head.check_store(store)
            for ids, X in store.iter_shards():
                self.stored.update(zip(ids, self.head.logits(X).tolist()))
        self.embedder.load()
        self.markers = tuple(dict.fromkeys(END_MARKERS + self.embedder.special_tokens()))
        self.recent: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.stats = collections.Counter()

    def logits(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """The head's logits of canonical pairs, from the store, the recent cache, or one
        forward pass over the pairs neither holds."""
        pairs = [normal_pair(p, r) for p, r in zip(prompts, responses)]  # keyed as score keys them
        prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
        ids = [make_pair_id(p, r) for p, r in zip(prompts, responses)]
        out = np.empty(len(ids), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        for i, pid in enumerate(ids):
            if pid in self.stored:
                out[i] = self.stored[pid]
                self.stats["store_hits"] += 1
            elif pid in self.recent:
                self.recent.move_to_end(pid)
                out[i] = self.recent[pid]
                self.stats["recent_hits"] += 1
            else:
                todo.setdefault(pid, []).append(i)
        self.stats["micro_batches"] += 1
        if todo:
            first = [rows[0] for rows in todo.values()]
            X = self.embedder([prompts[i] for i in first], [responses[i] for i in first])
            new = self.head.logits(X)
            self.stats["forward_batches"] += 1
            self.stats["computed"] += len(first)
            for (pid, rows), value in zip(todo.items(), new):
                out[rows] = value
                self.recent[pid] = float(value)
                if len(self.recent) > RECENT:
                    self.recent.popitem(last=False)
        return out

    def info(self) -> dict:
        return {"backbone": self.head.backbone, "spec_hash": self.head.spec_hash,
                "method": self.head.method, "head": str(self.head.folder),
                "store": {"path": str(self.store_root), "pairs": len(self.stored)},
                "card": self.head.card.to_dict()}


class Batcher:
    """Collects concurrent requests into micro-batches scored by one worker thread."""

    def __init__(self, model: RewardModel, max_batch: int, max_wait_ms: float):
        self.model, self.max_batch, self.wait = model, max_batch, max_wait_ms / 1000
        self.pending: collections.deque = collections.deque()
        self.arrived = asyncio.Event()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmpipe-score")
        self.largest = 0  # most requests ever answered by one micro-batch

    async def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((prompts, responses, future))
        self.arrived.set()
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            if not self.pending:
                continue
            if sum(len(p) for p, _, _ in self.pending) < self.max_batch and self.wait > 0:
                await asyncio.sleep(self.wait)
            while self.pending:
                batch, size = [], 0
                while self.pending and (not batch or size + len(self.pending[0][0]) <= self.max_batch):
                    item = self.pending.popleft()
                    batch.append(item)
                    size += len(item[0])
                await self._answer(loop, batch)

    async def _answer(self, loop, batch: list) -> None:
        prompts = [p for item in batch for p in item[0]]
        responses = [r for item in batch for r in item[1]]
        self.largest = max(self.largest, len(batch))
        try:
            logits = await loop.run_in_executor(self.worker, self.model.logits, prompts, responses)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for p, _, future in batch:
            if not future.done():  # the client may have gone
                future.set_result(logits[start:start + len(p)])
            start += len(p)


def build_app(model: RewardModel, settings: ServeSettings):
    """The FastAPI app over ``model``; the batcher runs for the app's lifetime."""
    import contextlib

    state: dict = {}

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

    async def body_json(request: Request):
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(f"body of {int(declared)} bytes is over the limit of {limit} (--max-body-mb)", 413)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise BadRequest(f"body is over the limit of {limit} bytes (--max-body-mb)", 413)
        try:
            return json.loads(bytes(raw))
        except ValueError as exc:
            raise BadRequest(f"body is not JSON ({str(exc).splitlines()[0][:120]})") from None

    async def rewards(request: Request, parse) -> tuple[list[float], list[float]]:
        prompts, responses = parse(await body_json(request))
        batcher = state["batcher"]
        batcher.model.stats["requests"] += 1
        batcher.model.stats["pairs"] += len(prompts)
        logits = await batcher.score(prompts, responses)
        return sigmoid(logits).astype(np.float64).tolist(), logits.astype(np.float64).tolist()

    @app.exception_handler(BadRequest)
    async def refused(_request, exc: BadRequest):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RmpipeError)
    async def store_trouble(_request, exc: RmpipeError):  # e.g. a shard corrupted under us
        return JSONResponse({"error": str(exc)}, status_code=500)

    @app.post("/rewards")
    async def native(request: Request):
        """A JSON list of {prompt, response} -> {"rewards": [...], "logits": [...]} in order."""
        reward, logit = await rewards(request, lambda b: native_pairs(b, settings.max_request_pairs))
        return {"rewards": reward, "logits": logit}

    @app.post("/get_reward")
    async def openrlhf(request: Request):
        """OpenRLHF's remote reward model: {"query", "prompts", "labels"} -> {"rewards", ...}."""
        reward, logit = await rewards(
            request, lambda b: openrlhf_pairs(b, settings.max_request_pairs, model.markers))
        return {"rewards": reward, "scores": reward, "extra_logs": {"rmpipe_logit": logit}}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        batcher = state["batcher"]
        counters = {"largest_micro_batch_requests": batcher.largest, **model.stats}
        return {**model.info(), "limits": dataclasses.asdict(settings), "stats": counters}

    return app


class ServerThread:
    """A real uvicorn server on a background thread, for tests and the benchmark: ``with
    ServerThread(app) as url: ...`` serves on a free loopback port and stops on exit."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 60):
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.timeout = start_timeout_s
        self.thread = None

    def __enter__(self) -> str:
        import threading

        self.thread = threading.Thread(target=self.server.run, name="rmpipe-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.timeout)


def serve(params: Params, head_dir: str | Path, settings: ServeSettings, *, log=print) -> None:
    """Load and check everything, then serve until interrupted (Ctrl-C stops it cleanly)."""
    import uvicorn

    start = time.perf_counter()
    model = RewardModel(params, head_dir)
    app = build_app(model, settings)
    log(f"rmpipe serve: head {model.head.folder} ({model.head.backbone}, {model.head.method}), "
        f"{len(model.stored)} stored pairs ready in {time.perf_counter() - start:.1f} s; "
        f"http://{settings.host}:{settings.port}  POST /rewards  POST /get_reward (OpenRLHF)  "
        f"GET /info  GET /health")
    sys.stdout.flush()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
