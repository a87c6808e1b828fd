"""The reward server's throughput on new pairs (what an RLHF run sends) against the batch path,
`rmpipe score`'s, on the same kind of pairs in the same process, as a table.

A real server (uvicorn, loopback only, clients on threads of this process) on a 240-row built-in
project in a temporary folder, MiniLM on CPU. Every pair sent is new (never seen, never
repeated). Each concurrency level is warmed up (not counted), then runs for ``--seconds``; right
before and after it, ``--batch-pairs`` new pairs go through ``rmpipe score``'s embedding path
(:func:`stages.embed.run.embed`, model start-up excluded: its own clock starts after the load),
and the level's ratio is against the mean of those two batch rates, so a machine whose load
drifts moves both sides. A last row is pairs already in the store (no forward pass).

    python bench/serve_throughput.py [--seconds 20] [--pairs 8] [--levels 1 4 8 16] [--dtypes auto float32]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import EmbedParams, EvaluateParams, load_params  # noqa: E402
from pipeline.table import pair_ids  # noqa: E402
from rmpipe.serve import RewardModel, ServerThread, ServeSettings, build_app  # noqa: E402
from stages.embed.precision import spec_dtype  # noqa: E402
from stages.embed.run import embed  # noqa: E402
from stages.fit.run import fit  # noqa: E402
from stages.prepare.run import prepare  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRESH = itertools.count(10**6)  # every pair of a run gets its own number (same digits throughout)


def fresh(n: int) -> list[tuple[str, str]]:
    """``n`` pairs never sent before, all of one shape (~34 MiniLM tokens)."""
    return [(f"Bench question {k}: how should I plan my week?",
             f"Answer {k}: list the tasks, then block time for each.") for k in itertools.islice(FRESH, n)]


def project(root: Path, dtype: str):
    params = load_params(REPO / "params.yaml")
    source = dataclasses.replace(params.prepare.source, kind="builtin", rows=240)
    minilm = dataclasses.replace(params.backbone("minilm"), dtype=dtype)
    params = dataclasses.replace(
        params, dataset="bench", data_dir=str(root / "data"),
        backbones={**params.backbones, "minilm": minilm},
        prepare=dataclasses.replace(params.prepare, source=source),
        embed=EmbedParams(backbones=("minilm",), store_dir=str(root / "emb"), models_dir=str(root / "models")),
        fit=dataclasses.replace(params.fit, heads_dir=str(root / "heads"), methods=("naive",)),
        evaluate=EvaluateParams(reports_dir=str(root / "reports")))
    prepare(params)
    embed(params, "minilm", progress=False)
    return params, fit(params, "minilm", ["naive"], progress=False, log=lambda _: None)["naive"]


def batch_rate(params, n: int) -> float:
    """Pairs/s of ``rmpipe score``'s embedding of ``n`` new pairs (tokenise, forward, commit)."""
    pairs = fresh(n)
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    table = pl.DataFrame({"pair_id": pair_ids(prompts, responses), "prompt": prompts, "response": responses})
    summary = embed(params, "minilm", table=table, progress=False)
    assert summary.computed == n, summary
    return summary.computed / summary.seconds


def run_level(url: str, make_body, concurrency: int, seconds: float, warmup: int) -> dict:
    """``concurrency`` clients post ``make_body()`` back to back: ``warmup`` requests each first
    (not counted), then for ``seconds``; a request in flight at the deadline still counts."""
    latencies, lock = [], threading.Lock()
    go, done_warmup = threading.Event(), threading.Barrier(concurrency + 1)
    window = {}

    def client():
        with httpx.Client(base_url=url, timeout=300) as c:
            for _ in range(warmup):
                c.post("/rewards", json=make_body()).raise_for_status()
            done_warmup.wait()
            go.wait()
            while time.perf_counter() < window["end"]:
                body = make_body()
                t = time.perf_counter()
                c.post("/rewards", json=body).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    done_warmup.wait()
    window["start"] = time.perf_counter()
    window["end"] = window["start"] + seconds
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - window["start"]
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"requests": len(latencies), "rps": len(latencies) / wall,
            "p50": statistics.median(latencies) * 1000, "p95": q[18] * 1000}


def bench_dtype(dtype: str, args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        params, head = project(Path(tmp), dtype)
        resolved = spec_dtype(params.backbone("minilm"))[0]
        model = RewardModel(params, head)
        stored = pl.read_parquet(params.table_path).select("prompt", "response").unique(maintain_order=True)
        stored = [{"prompt": p, "response": r} for p, r in stored.iter_rows()]
        lock = threading.Lock()

        def new_body():
            with lock:
                return [{"prompt": p, "response": r} for p, r in fresh(args.pairs)]

        cached = itertools.count()

        def stored_body():
            with lock:
                return [stored[next(cached) % len(stored)] for _ in range(args.pairs)]

        batch_rate(params, args.batch_pairs)  # the batch path's first shapes, not counted
        with ServerThread(build_app(model, ServeSettings())) as url:
            for concurrency in args.levels:
                before = batch_rate(params, args.batch_pairs)
                stats = dict(model.stats)
                r = run_level(url, new_body, concurrency, args.seconds, args.warmup)
                after = batch_rate(params, args.batch_pairs)
                r.update(kind="new", dtype=resolved, concurrency=concurrency, pairs_s=r["rps"] * args.pairs,
                         batch=(before + after) / 2, spread=abs(before - after) / ((before + after) / 2),
                         batches=model.stats["micro_batches"] - stats.get("micro_batches", 0),
                         forwards=model.stats["forward_batches"] - stats.get("forward_batches", 0))
                rows.append(r)
            concurrency = max(args.levels)
            stats = dict(model.stats)
            r = run_level(url, stored_body, concurrency, min(args.seconds, 5), args.warmup)
            r.update(kind="stored", dtype=resolved, concurrency=concurrency, pairs_s=r["rps"] * args.pairs,
                     batch=None, spread=None, batches=model.stats["micro_batches"] - stats.get("micro_batches", 0),
                     forwards=model.stats["forward_batches"] - stats.get("forward_batches", 0))
            rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20, help="counted seconds per level")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per request")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16], help="concurrency levels")
    ap.add_argument("--warmup", type=int, default=3, help="requests per client before counting")
    ap.add_argument("--batch-pairs", type=int, default=1024, help="new pairs per batch-rate run")
    ap.add_argument("--dtypes", nargs="+", default=["auto"], help="backbone dtypes (auto, float32, bfloat16)")
    args = ap.parse_args()
    import torch

    rows = [r for dtype in args.dtypes for r in bench_dtype(dtype, args)]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nrmpipe serve vs rmpipe score, MiniLM on CPU ({torch.get_num_threads()} torch threads), "
          f"{args.pairs} new pairs a request, {args.seconds:g} s a level; load average after: {load}\n")
    print("| pairs | dtype | concurrency | requests | serve pairs/s | score pairs/s (±) | serve / score "
          "| p50 ms | p95 ms | micro-batches | forward passes |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        batch = f"{r['batch']:.0f} (±{r['spread'] / 2:.0%})" if r["batch"] else "-"
        ratio = f"{r['pairs_s'] / r['batch']:.2f}" if r["batch"] else "-"
        print(f"| {r['kind']} | {r['dtype']} | {r['concurrency']} | {r['requests']} | {r['pairs_s']:.0f} | "
              f"{batch} | {ratio} | {r['p50']:.0f} | {r['p95']:.0f} | {r['batches']} | {r['forwards']} |")


if __name__ == "__main__":
    main()
