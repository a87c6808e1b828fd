"""Stage one's entry point: the pairs of a feedback table into a backbone's embedding store.

Only pair_ids the store lacks are embedded, in chunks of ``embed.commit_rows`` that are each
committed as one shard: a second run costs nothing, and a run killed at any moment loses at most
the chunk in flight. ``shard="i/n"`` takes the i-th of n hash-partitions of the pairs, so n
machines (a SLURM array, several GPUs) can fill one store side by side; runs on one store claim
each chunk under its lock, so concurrent runs split the pairs rather than each computing all. A
re-run on a full store only reads it: no lock, no model, not even its config (the manifest has
the width), so it is quick and works on a read-only disk.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import BackboneSpec, Params
from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore, open_if_current, spec_hash
from stages.embed import backbones, vectors
from stages.embed.backends import make_backend
from stages.embed.precision import spec_dtype

WAIT_S = 0.2  # poll interval while another run holds the remaining pairs
ENGINES = ("local", "ray")


@dataclass
class EmbedSummary:
    """What one run did, for the CLI's one line and for callers."""

    backbone: str
    store: str
    spec_hash: str
    dim: int
    pairs: int  # distinct pairs in this run's share of the table
    computed: int
    reused: int
    prompt_cut: int
    response_cut: int
    tokens: int
    seconds: float
    shard: str | None = None
    notes: list[str] = field(default_factory=list)  # what opening the store recovered
    dtype: str = ""  # what the backbone computed in, and why (``dtype: auto`` resolved)
    engine: str = "local"

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        where = f" (shard {self.shard})" if self.shard else ""
        where += f" (engine {self.engine})" if self.engine != "local" else ""
        return (f"embed {self.backbone}{where}: {self.computed} computed, {self.reused} reused, "
                f"truncated {self.prompt_cut} prompt(s) / {self.response_cut} response(s), "
                f"{self.tokens} tokens at {self.tokens_per_s:,.0f} tokens/s -> {self.store} "
                f"[{self.spec_hash}, dim {self.dim}, {self.dtype}]" + "".join(f"; {n}" for n in self.notes))

    def to_dict(self) -> dict:
        return asdict(self)


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 <= i < n) -> (i, n)."""
    if shard is None:
        return None
    if isinstance(shard, str):
        try:
            i, n = (int(x) for x in shard.split("/"))
        except ValueError:
            raise RmpipeError(f"--shard {shard!r}: expected i/n, e.g. 0/4") from None
    else:
        i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise RmpipeError(f"--shard {i}/{n}: need 0 <= i < n")
    return i, n


def in_shard(pair_id: str, i: int, n: int) -> bool:
    """Deterministic partition by a hash of the pair_id: the same on every machine."""
    digest = hashlib.blake2b(pair_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n == i


class Embedder:
    """A backbone's embedding function held in memory, for callers that embed pairs as they come
    (``rmpipe serve``) rather than a table into the store. ``spec_hash`` is the store key its
    vectors belong to (the same function :func:`embed` runs), known before :meth:`load`."""

    def __init__(self, params: Params, backbone: str):
        self.spec = params.backbone(backbone)
        self.resolved = backbones.resolve(self.spec, params.embed.models_dir, backbone)
        self.spec_hash = spec_hash(backbones.function_spec(self.spec, self.resolved.weights))
        self.backend = self.encoder = None

    def load(self) -> None:
        from stages.embed.text import PairEncoder

        self.backend = make_backend(self.spec, self.resolved.path)
        self.encoder = PairEncoder(self.backend.tokenizer, self.spec.max_tokens, self.spec.chat_template)

    def special_tokens(self) -> tuple[str, ...]:
        """The tokenizer's end-of-sequence and padding strings."""
        tok = self.backend.tokenizer
        return tuple(t for t in (tok.eos_token, tok.pad_token) if isinstance(t, str) and t)

    def __call__(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Embeddings (n, dim) float32 of canonical prompts and responses, in their order."""
        if self.backend is None:
            self.load()
        enc = self.encoder.encode(prompts, responses)
        return self.backend.encode(enc.ids, enc.type_ids)


def load_pairs(table: Any) -> tuple[list[str], list[str], list[str]]:
    """Distinct (pair_id, prompt, response) of a table path or a DataFrame, first-seen order."""
    import polars as pl

    from pipeline.table import check_pair_ids, read_table

    if isinstance(table, (str, Path)):
        df = read_table(table, columns=["pair_id", "prompt", "response"])
    elif isinstance(table, pl.DataFrame):
        missing = {"pair_id", "prompt", "response"} - set(table.columns)
        if missing:
            raise RmpipeError(f"table to embed lacks column(s) {', '.join(sorted(missing))}")
        df = table.select("pair_id", "prompt", "response")
        check_pair_ids(df, "table to embed")
    else:
        raise TypeError(f"table must be a path or a polars DataFrame, not {type(table).__name__}")
    df = df.unique(subset="pair_id", keep="first", maintain_order=True)
    return df["pair_id"].to_list(), df["prompt"].to_list(), df["response"].to_list()


def embed(params: Params, backbone: str, shard: str | tuple[int, int] | None = None, *,
          table: Any = None, rebuild: bool = False, progress: bool = True,
          engine: str = "local", ray: dict | None = None) -> EmbedSummary:
    """Embed every pair of ``table`` (default: the prepared table of ``params.dataset``) that the
    ``backbone`` store lacks, and return what was done. Idempotent; safe to run concurrently.
    ``engine="ray"`` computes on a Ray cluster (``ray``: address, actors, gpus_per_actor;
    :mod:`stages.embed.ray_engine`); ``"local"`` in this process."""
    if engine not in ENGINES:
        raise RmpipeError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    spec = params.backbone(backbone)
    resolved = backbones.resolve(spec, params.embed.models_dir, backbone)  # a missing model: before any work
    part = parse_shard(shard)
    ids, prompts, responses = load_pairs(table if table is not None else params.table_path)
    if part is not None:
        keep = [k for k, pid in enumerate(ids) if in_shard(pid, *part)]
        ids, prompts, responses = ([xs[k] for k in keep] for xs in (ids, prompts, responses))
    if vectors.is_vectors(spec.model):  # vectors computed elsewhere: copied, not computed
        start = time.perf_counter()
        done = vectors.embed_vectors(params, backbone, backbones.function_spec(spec, resolved.weights),
                                     resolved.path, ids, prompts, rebuild)
        store = done["store"]
        return EmbedSummary(backbone=backbone, store=str(store.root), spec_hash=store.spec_hash,
                            dim=store.dim, pairs=len(ids), computed=done["computed"],
                            reused=len(ids) - done["computed"], prompt_cut=0, response_cut=0, tokens=0,
                            seconds=time.perf_counter() - start, shard=f"{part[0]}/{part[1]}" if part else None,
                            notes=store.notes)

    function = backbones.function_spec(spec, resolved.weights)
    root = params.store_path(backbone)
    store = None if rebuild else open_if_current(root, spec_hash(function))
    if store is None and not rebuild:
        _refuse_stale(root, backbone)
    have = store.pair_ids() if store is not None else set()
    todo = [k for k, pid in enumerate(ids) if pid not in have]
    if store is None or todo:  # the width is read from the config only for a new store
        dim = store.dim if store is not None else backbones.hidden_size(resolved, spec.revision)
        store = EmbeddingStore.create(root, backbone=backbone, spec=function, dim=dim,
                                      dtype=params.embed.store_dtype, rebuild=rebuild)
        have = store.pair_ids()
        todo = [k for k, pid in enumerate(ids) if pid not in have]
    summary = EmbedSummary(backbone=backbone, store=str(store.root), spec_hash=store.spec_hash,
                           dim=store.dim, pairs=len(ids), computed=0, reused=len(ids),
                           prompt_cut=0, response_cut=0, tokens=0, seconds=0.0,
                           shard=f"{part[0]}/{part[1]}" if part else None, notes=store.notes,
                           dtype="{} ({})".format(*spec_dtype(spec)), engine=engine)
    if not todo:
        return summary
    try:
        if engine == "ray":
            from stages.embed.ray_engine import compute_on_ray

            compute_on_ray(summary, store, spec, resolved.path, [ids[k] for k in todo],
                           [prompts[k] for k in todo], [responses[k] for k in todo],
                           params.embed.commit_rows, progress, **(ray or {}))
        else:
            _compute(summary, store, spec, resolved.path, todo, ids, prompts, responses,
                     params.embed.commit_rows, progress)
    except KeyboardInterrupt:
        print(f"rmpipe: interrupted: {store.rows} row(s) committed to {store.root} "
              f"({summary.computed} by this run); run the same command again to resume",
              file=sys.stderr, flush=True)
        raise
    return summary


def _refuse_stale(root: Path, backbone: str) -> None:
    """A store of an older text rendering is refused with what to do, before any model loads."""
    try:
        manifest = EmbeddingStore(root).manifest
    except RmpipeError:
        return  # no store, or a damaged one: EmbeddingStore.create says what to do
    backbones.check_text_version(manifest, root, backbone)


def _compute(summary: EmbedSummary, store: EmbeddingStore, spec: BackboneSpec, path: str,
             todo: list[int], ids, prompts, responses, commit_rows: int, progress: bool) -> None:
    """Embed rows ``todo`` chunk by chunk, committing a shard after each. Each chunk is claimed
    under the store's lock first, so concurrent runs split the rows; pairs another live run has
    claimed are waited for (its claim dies with it, and they are then taken over here)."""
    from tqdm.auto import tqdm

    from stages.embed.text import PairEncoder

    backend = make_backend(spec, path)
    encoder = PairEncoder(backend.tokenizer, spec.max_tokens, spec.chat_template)
    info = {**backend.exec_info(), "host": socket.gethostname(), "pid": os.getpid(),
            "shard": summary.shard}
    bar = tqdm(total=len(todo), unit="pair", desc=f"embed {summary.backbone}",
               disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    row = {ids[k]: k for k in todo}

    def on_batch(pairs: int, tokens: int) -> None:
        summary.tokens += tokens
        bar.update(pairs)
        bar.set_postfix_str(f"{summary.tokens / (time.perf_counter() - start):,.0f} tok/s",
                            refresh=False)

    claim = None
    try:
        while True:
            claim, pending = store.claim(list(row), commit_rows)
            if claim is None:
                if not pending:
                    break
                time.sleep(WAIT_S)  # another run is computing the rest
                continue
            fresh = [row[pid] for pid in claim.pair_ids]
            enc = encoder.encode([prompts[k] for k in fresh], [responses[k] for k in fresh])
            vectors = backend.encode(enc.ids, enc.type_ids, on_batch=on_batch)
            summary.computed += store.append(claim.pair_ids, vectors, info, claim=claim)
            summary.prompt_cut += enc.prompt_cut
            summary.response_cut += enc.response_cut
            for pid in claim.pair_ids:
                row.pop(pid, None)
    finally:
        if claim is not None:
            claim.release()  # interrupted mid-chunk: give the rows back at once
        bar.close()
        summary.seconds = time.perf_counter() - start
        summary.reused = summary.pairs - summary.computed
