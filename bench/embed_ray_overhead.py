"""What the Ray engine costs over the local engine: the same pairs into fresh stores, tokens/s.

Real pairs from ../shared/data (bench/embed_throughput.py's sample), MiniLM, rounds interleaved
(local, ray, local, ray, ...) in one process so that the load of a shared machine hits both
alike. The Ray cluster is started once before timing (``ray.init(num_cpus=...)``): each Ray run's
time includes building the Dataset, starting its actors (loading the model in each) and the
driver's commits; the local run's includes loading the model once.

    .venv/bin/python bench/embed_ray_overhead.py [--pairs 512] [--rounds 2] [--cpus 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.embed_throughput import real_pairs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2, help="the local Ray cluster's CPUs")
    ap.add_argument("--commit-rows", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import polars as pl
    import ray
    import torch

    from pipeline.config import load_params
    from pipeline.store import EmbeddingStore
    from pipeline.table import make_pair_id
    from stages.embed.run import embed

    pairs = real_pairs(args.seed, args.pairs)
    table = pl.DataFrame({"pair_id": [make_pair_id(p, r) for p, r in pairs],
                          "prompt": [p for p, _ in pairs], "response": [r for _, r in pairs]}
                         ).unique(subset="pair_id", keep="first", maintain_order=True)
    base = load_params(ROOT / "params.yaml")
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, log_to_driver=False, include_dashboard=False)
    print(f"ray.init (local cluster, {args.cpus} CPUs): {time.perf_counter() - t0:.1f} s", flush=True)
    engines = [("local", None, f"local engine (torch {torch.get_num_threads()} threads)"),
               ("ray", {"actors": 1, "cpus_per_actor": args.cpus}, f"ray, 1 actor x {args.cpus} CPUs"),
               ("ray", {"actors": args.cpus, "cpus_per_actor": 1}, f"ray, {args.cpus} actors x 1 CPU")]
    runs: dict[str, list] = {label: [] for *_, label in engines}
    for r in range(args.rounds):
        for engine, opts, label in engines:
            with tempfile.TemporaryDirectory(prefix="rmpipe-ray-bench-") as tmp:
                p = dataclasses.replace(base, embed=dataclasses.replace(
                    base.embed, store_dir=tmp, commit_rows=args.commit_rows))
                t0 = time.perf_counter()
                s = embed(p, "minilm", table=table, progress=False, engine=engine, ray=opts)
                wall = time.perf_counter() - t0
                assert s.computed == table.height
                runs[label].append((s.tokens, wall))
                inside = ""
                if engine == "ray":  # what the actors say they spent: model load, then forward passes
                    ex = [sh["exec"] for sh in EmbeddingStore(p.store_path("minilm")).manifest["shards"]]
                    compute = sum(e["compute_s"] for e in ex) / opts["actors"]
                    inside = (f"; inside the actors: start-up and model load up to {max(e['load_s'] for e in ex):.1f} s, "
                              f"then {sum(e['tokens'] for e in ex) / compute:,.0f} tokens/s (busy time)")
                print(f"round {r} {label}: {s.tokens} tokens in {wall:.1f} s ({s.dtype}){inside}", flush=True)
    ray.shutdown()
    base_rate = sum(t for t, _ in runs[engines[0][2]]) / sum(w for _, w in runs[engines[0][2]])
    print(f"\nMiniLM, {table.height} real pairs, commit_rows {args.commit_rows}, {args.rounds} "
          f"interleaved rounds; wall time of embed() (model loads and actor start-up included)\n")
    print("| engine | tokens/s per round | tokens/s (all rounds) | vs local |")
    print("|---|---|---:|---:|")
    for label, rs in runs.items():
        rate = sum(t for t, _ in rs) / sum(w for _, w in rs)
        print(f"| {label} | {', '.join(f'{t / w:,.0f}' for t, w in rs)} | {rate:,.0f} | {rate / base_rate:.2f}x |")


if __name__ == "__main__":
    main()
