"""What bfloat16 costs: MiniLM embeddings in float32 and in bfloat16, and heads trained on each.

1. Embeds the default world (the builtin table) and a graded shared set with MiniLM twice, into
   two stores (backbones ``minilm-f32`` and ``minilm-bf16``), timing each (same process).
2. Prints how far the bfloat16 vectors are from the float32 ones (cosine, max |Δ|), beside what
   an execution setting changes (the float32 batch budget 2,048 vs 16,384 padded tokens): the
   yardstick for whether the dtype belongs to the store key.
3. Fits heads on both, same draws (simulation seed, folds and head seed alike: paper_protocol's
   ``run_draw``), and prints R², MAE, AUROC, best-of-N per dtype and the paired per-seed
   difference bfloat16 − float32 with a 95% t-interval (paper_report's ``paired``).

    RMPIPE_SHARED_DATA=/work/shared/data .venv/bin/python bench/bf16_quality.py \
        [--dataset wmt-mqm-ted-ende] [--seeds 5] [--max-epochs 30] [--methods naive causalrm]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paper_protocol import fit_params, run_draw  # noqa: E402
from bench.paper_report import _ci, paired  # noqa: E402
from bench.worlds import _from_frame, shared_params  # noqa: E402
from pipeline.config import Params, load_params  # noqa: E402

DTYPES = {"minilm-f32": "float32", "minilm-bf16": "bfloat16"}
METRICS = ("r2", "mae", "auroc", "bon_pick")
RHO = (0.1, 0.2)


def with_backbones(params: Params, store_dir: str) -> Params:
    base = params.backbone("minilm")
    specs = {name: dataclasses.replace(base, dtype=d) for name, d in DTYPES.items()}
    return dataclasses.replace(params, backbones={**params.backbones, **specs},
                               embed=dataclasses.replace(params.embed, store_dir=store_dir))


def world_params(params: Params, world: str, seed: int) -> Params:
    """``default``: the builtin table of params.yaml; else a shared set; simulation seed ``seed``."""
    if world != "default":
        return shared_params(params, world, 0.5, RHO, seed)
    sim = dataclasses.replace(params.prepare.simulate, enabled=True, rho_pos=RHO[0], rho_neg=RHO[1], seed=seed)
    return dataclasses.replace(params, prepare=dataclasses.replace(params.prepare, simulate=sim))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="wmt-mqm-ted-ende", help="the graded shared set")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--methods", nargs="+", default=["naive", "causalrm"])
    ap.add_argument("--store-dir", default=str(REPO / "cache" / "embeddings"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import polars as pl
    import torch
    from threadpoolctl import threadpool_limits

    from pipeline.store import EmbeddingStore
    from stages.embed.run import embed
    from stages.prepare.run import build

    params = with_backbones(load_params(REPO / "params.yaml"), args.store_dir)
    worlds = ["default", args.dataset]
    frames = {w: build(world_params(params, w, 0), where=f"bench:{w}")[0] for w in worlds}
    pairs = pl.concat([f.select("pair_id", "prompt", "response") for f in frames.values()]).unique(
        subset="pair_id", keep="first", maintain_order=True)
    ids = pairs["pair_id"].to_list()
    X = {}
    for name in DTYPES:
        t0 = time.perf_counter()
        s = embed(params, name, table=pairs, progress=False)
        print(f"{s.line()} ({time.perf_counter() - t0:.0f} s)", flush=True)
        X[name] = EmbeddingStore(params.store_path(name)).read(ids)

    a, b = X["minilm-f32"], X["minilm-bf16"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    rows = [("bfloat16 vs float32 (store vectors, all pairs)", len(ids), cos, np.abs(a - b))]
    rows.append(execution_yardstick(params, pairs.head(512)))
    print(f"\n{len(ids)} pairs: the {args.dataset} set and the default world; MiniLM mean pooling; "
          f"|e| ≈ {np.linalg.norm(a, axis=1).mean():.2f}, coordinates' mean |e_i| {np.abs(a).mean():.3f}\n")
    print("| compared | pairs | mean cosine | min cosine | mean of max abs Δ per pair | max abs Δ |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, n, c, d in rows:
        print(f"| {label} | {n} | {c.mean():.6f} | {c.min():.6f} | {d.max(1).mean():.2e} | {d.max():.2e} |")

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    X_of = {p: i for i, p in enumerate(ids)}
    res: dict = {}  # (world, method, metric) -> {dtype name: {seed: value}}
    for world in worlds:
        for seed in range(args.seeds):
            df = build(world_params(params, world, seed), where=f"bench:{world}")[0]
            fp = fit_params(params.fit, RHO, seed, args.max_epochs, 10, args.threads)
            for name in DTYPES:
                t0 = time.perf_counter()
                fits, _ = run_draw(_from_frame(df, X_of, X[name], params.fit.row_columns), fp,
                                   args.methods, estimated=False, oracle=True)
                for f in fits:
                    for m in METRICS:
                        res.setdefault((world, f["method"], m), {}).setdefault(name, {})[seed] = f.get(m)
                print(f"  {world} seed {seed} {name}: " + " ".join(
                    f"{f['method']} R² {f['r2']:+.3f}" for f in fits) + f" ({time.perf_counter() - t0:.0f} s)",
                    flush=True)

    print(f"\nheads on float32 vs bfloat16 MiniLM embeddings, same draws: α 0.5, ρ {RHO}, "
          f"{args.seeds} seeds, ≤{args.max_epochs} epochs; mean ± sd per dtype, then the paired "
          f"per-seed difference bfloat16 − float32 [95% t-interval]\n")
    print("| world | method | metric | float32 | bfloat16 | bf16 − f32 |")
    print("|---|---|---|---:|---:|---:|")
    for (world, method, metric), by in res.items():
        f32, bf = by["minilm-f32"], by["minilm-bf16"]
        if all(v is None for v in f32.values()):
            continue
        ms = [f"{np.mean([v for v in d.values() if v is not None]):.3f} ± "
              f"{np.std([v for v in d.values() if v is not None], ddof=1):.3f}" for d in (f32, bf)]
        print(f"| {world} | {method} | {metric} | {ms[0]} | {ms[1]} | {_ci(paired(bf, f32))} |")


def execution_yardstick(params: Params, pairs) -> tuple:
    """float32 MiniLM at the CPU and GPU batch budgets: what an execution setting changes."""
    from stages.embed.backbones import resolve
    from stages.embed.hf_backend import HFBackend
    from stages.embed.text import PairEncoder

    spec = params.backbone("minilm-f32")
    backend = HFBackend(resolve(spec, params.embed.models_dir).path, pooling=spec.pooling,
                        dtype="float32", device="cpu", batch_tokens=2048)
    enc = PairEncoder(backend.tokenizer, spec.max_tokens, spec.chat_template).encode(
        pairs["prompt"].to_list(), pairs["response"].to_list())
    a = backend.encode(enc.ids, enc.type_ids)
    backend.batch_tokens = 16384
    b = backend.encode(enc.ids, enc.type_ids)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return "float32, batch budget 2,048 vs 16,384 (execution setting)", len(a), cos, np.abs(a - b)


if __name__ == "__main__":
    main()
