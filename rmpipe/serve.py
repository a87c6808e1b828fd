"""``rmpipe serve --head HEAD``: a head as an HTTP reward server (FastAPI on uvicorn).

Routes (:mod:`rmpipe.app`; wire formats in :mod:`rmpipe.protocol`, a user's guide in
docs/serving.md): ``POST /rewards`` (native), ``POST /get_reward`` (OpenRLHF's remote reward
model), ``POST /classify`` (vLLM's, as VERL's reward loop calls it), ``GET /health``, ``GET /info``.

- Before serving, the head is checked against the embedding store's key and against the key of
  the params' backbone (the function that will embed new pairs): a mismatch is refused at start.
- Pairs already in the store cost no forward pass: at start-up the head scores every stored pair
  once (one pass over the store, shard by shard) and keeps only the logits (~100 bytes a pair).
- New pairs go through the backbone in the server and are kept in a bounded in-memory cache
  (``RECENT`` pairs); they are **not written to the store**: RL rollouts are mostly one-off, a
  shard per micro-batch would fragment the store, and a read-only store can still be served.
  A vectors backbone (:mod:`stages.embed.vectors`) has no model: it scores the pairs its file
  holds, and the others come back as missing (NaN here), never as a made-up reward.
"""

from __future__ import annotations

import collections
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.errors import RmpipeError
from pipeline.heads import load_head
from pipeline.store import MANIFEST, EmbeddingStore
from pipeline.table import canonical_prompt, make_pair_id, normal_pair
from rmpipe.protocol import END_MARKERS, KNOWN_DEFAULT_SYSTEMS, Canon, template_turns
from stages.embed import backbones, vectors
from stages.embed.run import Embedder

RECENT = 65_536  # new pairs whose logits the server remembers


@dataclass(frozen=True)
class ServeSettings:
    """The server's knobs (CLI flags), checked when made."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64  # pairs a micro-batch collects at most
    max_wait_ms: float = 5.0  # the longest a free worker holds a batch open for the clients it answered
    max_request_pairs: int = 1024  # a request with more is refused (413)
    max_body_mb: float = 16.0  # a body larger than this is refused (413)
    max_pair_chars: int = 65_536  # a pair (prompt + response) longer than this is refused (413)
    default_systems: tuple[str, ...] = ()  # more default system turns to drop (--default-system)

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise RmpipeError(f"--port {self.port}: not a TCP port (0-65535)")
        for name in ("max_batch", "max_request_pairs", "max_pair_chars"):
            if getattr(self, name) < 1:
                raise RmpipeError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if not 0 <= self.max_wait_ms <= 1000:
            raise RmpipeError(f"--max-wait-ms {self.max_wait_ms}: must be within 0-1000")
        if self.max_body_mb <= 0:
            raise RmpipeError(f"--max-body-mb {self.max_body_mb}: must be positive")
        if any(not s.strip() for s in self.default_systems):
            raise RmpipeError("--default-system: an empty system turn")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))


def template_default_system(tokenizer) -> str | None:
    """The system turn a chat template injects into a conversation that has none (SmolLM2's
    does), read by rendering a one-turn conversation; None when it injects none or the template
    is not ChatML or Llama-3."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "rmpipe"}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that needs more than this: nothing to learn
        return None
    found = template_turns(text) if isinstance(text, str) else None
    if found and len(found[0]) > 1 and found[0][0]["role"] == "system":
        return found[0][0]["content"]
    return None


class RewardModel:
    """The head, its stored pairs' logits and its backbone, loaded and checked once. Not
    thread-safe: the server calls :meth:`logits` from one worker thread."""

    def __init__(self, params: Params, head_dir: str | Path):
        self.head = load_head(head_dir)
        backbone = self.head.backbone
        spec = params.backbone(backbone)
        # the key before the weights: a GGUF backbone is dequantised only for a head that fits it
        self.head.check_key(backbones.store_key(spec, backbone), f"params (backbones.{backbone})")
        if vectors.is_vectors(spec.model):
            self.vectors_file = backbones.resolve(spec, params.embed.models_dir, backbone).path
            self.embedder = vectors.VectorLookup(self.vectors_file)
        else:
            self.vectors_file = None
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
        backend = getattr(self.embedder, "backend", None)
        self.template_system = template_default_system(backend.tokenizer) if backend else None
        self.recent: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.stats = collections.Counter()

    def canon(self, settings: ServeSettings) -> Canon:
        """The conversation rule for this backbone and these settings (rmpipe.protocol)."""
        systems = (self.template_system,) if self.template_system else ()
        return Canon(markers=self.markers, max_pair_chars=settings.max_pair_chars,
                     default_systems=tuple(dict.fromkeys(systems + KNOWN_DEFAULT_SYSTEMS
                                                         + settings.default_systems)))

    def _known(self, pid: str, prompt: str, response: str) -> float | None:
        if pid in self.stored:
            return self.stored[pid]
        if not prompt.startswith("[{"):  # a lone user turn may be stored as chat turns
            return self.stored.get(make_pair_id(canonical_prompt([{"role": "user", "content": prompt}]), response))
        return None

    def logits(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """The head's logits of canonical pairs, from the store, the recent cache, or one
        forward pass over the pairs neither holds; NaN for a pair a vectors file lacks."""
        pairs = [normal_pair(p, r) for p, r in zip(prompts, responses)]  # keyed as score keys them
        prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
        ids = [make_pair_id(p, r) for p, r in zip(prompts, responses)]
        out = np.empty(len(ids), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        for i, pid in enumerate(ids):
            known = self._known(pid, prompts[i], responses[i])
            if known is not None:
                out[i] = known
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
            for (pid, rows), value in zip(todo.items(), new):
                out[rows] = value
                if np.isnan(value):
                    self.stats["missing"] += len(rows)
                    continue
                self.stats["computed"] += 1
                self.recent[pid] = float(value)
                if len(self.recent) > RECENT:
                    self.recent.popitem(last=False)
        return out

    def missing_note(self, count: int) -> str:
        return (f"{count} pair(s) have no vector in {self.vectors_file}: this backbone reads vectors "
                f"computed elsewhere and cannot embed new text; add them to the file and restart")

    def info(self) -> dict:
        return {"backbone": self.head.backbone, "spec_hash": self.head.spec_hash,
                "method": self.head.method, "head": str(self.head.folder),
                "store": {"path": str(self.store_root), "pairs": len(self.stored)},
                "vectors_file": self.vectors_file, "card": self.head.card.to_dict()}


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

    from rmpipe.app import build_app

    start = time.perf_counter()
    model = RewardModel(params, head_dir)
    app = build_app(model, settings)
    log(f"rmpipe serve: head {model.head.folder} ({model.head.backbone}, {model.head.method}), "
        f"{len(model.stored)} stored pairs ready in {time.perf_counter() - start:.1f} s; "
        f"http://{settings.host}:{settings.port}  POST /rewards  POST /get_reward (OpenRLHF)  "
        f"POST /classify (vLLM)  GET /info  GET /health")
    sys.stdout.flush()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def build_app(model: RewardModel, settings: ServeSettings):
    """The FastAPI app (:func:`rmpipe.app.build_app`), importable from here as before."""
    from rmpipe.app import build_app as build

    return build(model, settings)
