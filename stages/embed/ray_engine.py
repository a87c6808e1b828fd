"""Stage one on Ray Data: ``rmpipe embed --engine ray [--address auto]``.

The pairs the store lacks are claimed by the driver (as the local engine claims a chunk, so a
concurrent run of either engine waits for them rather than computing them twice), cut into
blocks of ``embed.commit_rows`` and mapped over a pool of actors, one model each
(``map_batches`` over a callable class with ``concurrency`` and ``num_gpus``). Each actor runs
the local engine's backend code and writes one shard per block, in the store's own format and
with its own checks, into a staging folder beside the claim (``.claim-<id>.shards/``, on the
store's disk: a path every node must see). The driver commits each finished shard to the
manifest under the store's lock (:meth:`EmbeddingStore.commit_shard`) as it arrives.

Faults: a killed driver's claim dies with it; the next run of either engine's driver adopts the
shards its actors had finished (they pass their own checks) and computes only the rest. On
Ctrl-C the driver commits what its actors have finished, then says what was kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.config import BackboneSpec
from pipeline.errors import RmpipeError
from pipeline.store import HEADER, EmbeddingStore
from stages.embed.precision import spec_dtype

STAGING = ".shards"  # suffix of a claim's staging folder: .claim-<id>.shards/
WAIT_S = 0.2


class ShardWriter:
    """One model per Ray actor: embeds a block of pairs and writes it as one finished shard
    in the staging folder. Returns the shard's path and the block's counts."""

    def __init__(self, spec: dict, path: str, header: dict, staging: str, info: dict, threads: int):
        t0 = time.perf_counter()
        import torch

        from stages.embed.backends import make_backend
        from stages.embed.text import PairEncoder

        if threads > 0:
            torch.set_num_threads(threads)
        self.spec = BackboneSpec(**spec)
        self.backend = make_backend(self.spec, path)
        self.encoder = PairEncoder(self.backend.tokenizer, self.spec.max_tokens, self.spec.chat_template)
        self.header, self.staging = header, Path(staging)
        self.info = {**info, **self.backend.exec_info(), "host": socket.gethostname(), "pid": os.getpid(),
                     "load_s": round(time.perf_counter() - t0, 3)}

    def __call__(self, batch: dict) -> dict:
        import numpy as np
        import pyarrow.parquet as pq

        from pipeline.atomic import atomic_path
        from pipeline.shards import shard_table

        t0 = time.perf_counter()
        ids = [str(x) for x in batch["pair_id"]]
        enc = self.encoder.encode([str(x) for x in batch["prompt"]], [str(x) for x in batch["response"]])
        vectors = self.backend.encode(enc.ids, enc.type_ids).astype(np.dtype(self.header["dtype"]))
        target = self.staging / f"shard-{uuid.uuid4().hex[:12]}.parquet"
        with atomic_path(target) as tmp:
            info = {**self.info, "compute_s": round(time.perf_counter() - t0, 3), "tokens": enc.tokens}
            pq.write_table(shard_table(ids, vectors, self.header, info), tmp)
        return {"file": [str(target)], "rows": [len(ids)], "tokens": [enc.tokens],
                "prompt_cut": [enc.prompt_cut], "response_cut": [enc.response_cut]}


def adopt_orphans(store: EmbeddingStore) -> list[str]:
    """Commit the finished shards that a dead driver's actors left in its staging folder, and
    delete the folder (temp files included). Returns a note per folder adopted."""
    notes = []
    for folder in sorted(store.root.glob(f".claim-*{STAGING}")):
        lock = FileLock(store.root / f"{folder.name[:-len(STAGING)]}.lock")
        try:
            lock.acquire(timeout=0)  # held while its driver lives
        except Timeout:
            continue
        try:
            rows = 0
            for shard in sorted(folder.glob("shard-*.parquet")):
                try:
                    rows += store.commit_shard(shard)
                except RmpipeError:  # half-written, or adopted by another run meanwhile
                    shard.unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
            if rows:
                notes.append(f"adopted {rows} row(s) a stopped Ray run had finished")
        finally:  # its driver is dead: so is its claim
            (store.root / f"{folder.name[:-len(STAGING)]}.json").unlink(missing_ok=True)
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)
    return notes


def _connect(address: str | None):
    try:
        import ray
    except ImportError:
        raise RmpipeError("--engine ray needs Ray: pip install '.[ray]' (the ray extra)") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except ConnectionError as exc:
            first = (str(exc).strip().splitlines() or ["no cluster"])[0]
            raise RmpipeError(f"--address {address}: cannot reach a Ray cluster ({first})") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our bar and line say what it did
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray


def compute_on_ray(summary, store: EmbeddingStore, spec: BackboneSpec, path: str, ids: list[str],
                   prompts: list[str], responses: list[str], commit_rows: int, progress: bool,
                   address: str | None = None, actors: int | None = None,
                   cpus_per_actor: float | None = None, gpus_per_actor: float | None = None) -> None:
    """Embed pairs ``ids`` into ``store`` on a Ray cluster (see the module's docstring),
    updating ``summary`` as shards are committed."""
    from tqdm.auto import tqdm

    ray = _connect(address)
    summary.notes += adopt_orphans(store)
    text = {pid: (p, r) for pid, p, r in zip(ids, prompts, responses)}
    have = store.pair_ids()
    left = [pid for pid in ids if pid not in have]
    if gpus_per_actor is None:  # one model per GPU where the cluster has GPUs
        gpus_per_actor = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
    cpus_per_actor = cpus_per_actor or 1.0
    if actors is None:
        pool = ray.cluster_resources().get("GPU" if gpus_per_actor else "CPU", 1)
        actors = max(1, int(pool // (gpus_per_actor or cpus_per_actor)))
    header = {k: store.manifest[k] for k in HEADER}
    # the key's dtype, resolved here: an actor on another device must not resolve `auto` anew
    fixed = dataclasses.replace(spec, dtype=spec_dtype(spec)[0])
    bar = tqdm(total=len(left), unit="pair", desc=f"embed {summary.backbone} (ray, {actors} actor(s))",
               disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        while left:
            claim, pending = store.claim(left, len(left))
            if claim is None:
                if not pending:
                    break
                time.sleep(WAIT_S)  # another run is computing the rest
                left = [pid for pid in left if pid not in store.pair_ids()]
                continue
            mine = claim.pair_ids  # counted as computed once committed, however it ends
            staging = store.root / f"{claim.name}{STAGING}"
            staging.mkdir()
            try:
                _run_claim(ray, summary, store, fixed, path, claim.pair_ids, text, commit_rows,
                           header, staging, actors, cpus_per_actor, gpus_per_actor, bar, start)
            finally:
                for shard in sorted(staging.glob("shard-*.parquet")):  # finished, not yet committed
                    store.commit_shard(shard)
                shutil.rmtree(staging, ignore_errors=True)
                claim.release()
                summary.computed += len(store.pair_ids().intersection(mine))
            done = store.pair_ids()
            left = [pid for pid in left if pid not in done]
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        summary.reused = summary.pairs - summary.computed


def _run_claim(ray, summary, store, spec, path, pair_ids, text, commit_rows, header, staging,
               actors, cpus_per_actor, gpus_per_actor, bar, start) -> None:
    import pyarrow as pa

    blocks = [pa.table({"pair_id": chunk, "prompt": [text[p][0] for p in chunk],
                        "response": [text[p][1] for p in chunk]})
              for chunk in (pair_ids[i:i + commit_rows] for i in range(0, len(pair_ids), commit_rows))]
    info = {"engine": "ray", "driver": socket.gethostname(), "shard": summary.shard}
    mapped = ray.data.from_arrow(blocks).map_batches(
        ShardWriter, batch_size=commit_rows, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(actors, len(blocks))),
        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
        fn_constructor_kwargs=dict(spec=dataclasses.asdict(spec), path=path, header=header,
                                   staging=str(staging), info=info, threads=int(cpus_per_actor)))
    batches = iter(mapped.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        for out in batches:
            for k, file in enumerate(out["file"]):
                store.commit_shard(file)
                summary.tokens += int(out["tokens"][k])
                summary.prompt_cut += int(out["prompt_cut"][k])
                summary.response_cut += int(out["response_cut"][k])
                bar.update(int(out["rows"][k]))
                bar.set_postfix_str(f"{summary.tokens / (time.perf_counter() - start):,.0f} tok/s",
                                    refresh=False)
    finally:
        getattr(batches, "close", lambda: None)()  # stop the executor now, not at exit
