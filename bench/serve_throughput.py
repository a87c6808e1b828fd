"""The reward server's throughput: requests/s and p50/p95 latency at concurrency 1, 4 and 16,
for pairs already in the store (no forward pass) and new pairs (MiniLM on CPU), as a table.

A real server (uvicorn, loopback only) on a 240-row built-in project in a temporary folder;
every level sends a bounded number of requests and stops after ``--seconds`` at most. Ratios are
against the cached, concurrency-1 row of the same run.

    python bench/serve_throughput.py [--requests 48] [--pairs 4] [--seconds 60]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from rmpipe.serve import RewardModel, ServerThread, ServeSettings, build_app  # noqa: E402
from stages.embed.run import embed  # noqa: E402
from stages.fit.run import fit  # noqa: E402
from stages.prepare.run import prepare  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def project(root: Path):
    params = load_params(REPO / "params.yaml")
    source = dataclasses.replace(params.prepare.source, kind="builtin", rows=240)
    params = dataclasses.replace(
        params, dataset="bench", data_dir=str(root / "data"),
        prepare=dataclasses.replace(params.prepare, source=source),
        embed=EmbedParams(backbones=("minilm",), store_dir=str(root / "emb"), models_dir=str(root / "models")),
        fit=dataclasses.replace(params.fit, heads_dir=str(root / "heads"), methods=("naive",)),
        evaluate=EvaluateParams(reports_dir=str(root / "reports")))
    prepare(params)
    embed(params, "minilm", progress=False)
    return params, fit(params, "minilm", ["naive"], progress=False, log=lambda _: None)["naive"]


def run_level(url: str, bodies: list[list[dict]], concurrency: int, seconds: float) -> dict:
    """Send ``bodies`` with ``concurrency`` clients; stop when done or after ``seconds``."""
    latencies, lock, nxt = [], threading.Lock(), [0]
    deadline = time.monotonic() + seconds

    def client():
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.monotonic() < deadline:
                with lock:
                    if nxt[0] >= len(bodies):
                        return
                    body = bodies[nxt[0]]
                    nxt[0] += 1
                t = time.perf_counter()
                reply = c.post("/rewards", json=body)
                reply.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"requests": len(latencies), "rps": len(latencies) / wall,
            "p50": statistics.median(latencies) * 1000, "p95": q[18] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=48, help="requests per level")
    ap.add_argument("--pairs", type=int, default=4, help="pairs per request")
    ap.add_argument("--seconds", type=float, default=60, help="time limit per level")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        params, head = project(Path(tmp))
        model = RewardModel(params, head)
        stored = pl.read_parquet(params.table_path).select("prompt", "response").unique(maintain_order=True)
        stored = [{"prompt": p, "response": r} for p, r in stored.iter_rows()]
        rows, fresh = [], iter(range(10**9))
        with ServerThread(build_app(model, ServeSettings())) as url:
            for mode in ("cached", "uncached"):
                for concurrency in (1, 4, 16):
                    if mode == "cached":
                        bodies = [[stored[(i * args.pairs + j) % len(stored)] for j in range(args.pairs)]
                                  for i in range(args.requests)]
                    else:
                        bodies = [[{"prompt": f"Bench question {k}: how should I plan my week?",
                                    "response": f"Answer {k}: list the tasks, then block time for each."}
                                   for k in (next(fresh) for _ in range(args.pairs))] for _ in range(args.requests)]
                    before = dict(model.stats)
                    r = run_level(url, bodies, concurrency, args.seconds)
                    r.update(mode=mode, concurrency=concurrency,
                             batches=model.stats["micro_batches"] - before.get("micro_batches", 0),
                             forwards=model.stats["forward_batches"] - before.get("forward_batches", 0))
                    rows.append(r)
    base = rows[0]
    print(f"\nrmpipe serve, MiniLM on CPU, {args.pairs} pairs a request, loopback "
          f"(ratios vs cached at concurrency 1)\n")
    print("| pairs | concurrency | requests | req/s | × | p50 ms | p95 ms | micro-batches | forward passes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['rps']:.1f} | "
              f"{r['rps'] / base['rps']:.2f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['batches']} | {r['forwards']} |")


if __name__ == "__main__":
    main()
