"""Time per epoch and peak memory of every method's fit, one subprocess per method.

    .venv/bin/python bench/fit_speed.py                # N=35,000, D=4,096, 5 epochs
    .venv/bin/python bench/fit_speed.py --n 5000 --d 256 --epochs 2

Random embeddings (float32, held once: N·D·4 bytes), 20% observed, known noise rates (so no
anchor step); the nuisance models are the params defaults (logistic, 5 folds) unless flags say
otherwise. Time per epoch is the median over epochs (train steps + validation pass); peak
memory is the child's max RSS. Prints one row per method and ratios to ``naive``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(args) -> None:
    import numpy as np
    import torch

    from pipeline.config import FitParams, HeadParams, NoiseParams, PropensityParams
    from stages.fit.core import FitInputs, fit_method, fit_nuisance
    from stages.fit.methods import get_method

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.d), dtype=np.float32)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    score = X[:, :8].sum(axis=1) / np.sqrt(8)
    observed = rng.random(args.n) < 1 / (1 + np.exp(-(score - 1.6)))
    feedback = (rng.random(args.n) < 1 / (1 + np.exp(-2 * score))).astype(np.int8)
    split = np.where(rng.random(args.n) < 0.8, "train", "val")
    data = FitInputs(X, split, observed, np.where(observed, feedback, 0))
    params = FitParams(
        head=HeadParams(max_epochs=args.epochs, patience=args.epochs + 1, threads=args.threads),
        noise=NoiseParams(rho_pos=0.1, rho_neg=0.2),
        propensity=PropensityParams(model=args.propensity, pca_dim=args.pca_dim, folds=args.folds))
    method = get_method(args.child)
    t0 = time.perf_counter()
    nuisance = fit_nuisance(data, params, [method])
    t1 = time.perf_counter()
    _, result = fit_method(data, nuisance, method, params)
    trained = int(((split == "train") & observed).sum()) if not method.needs_imputation else int((split == "train").sum())
    print(json.dumps({
        "method": args.child, "nuisance_s": t1 - t0,
        "s_per_epoch": float(np.median([c["seconds"] for c in result.curve])),
        "epochs": result.epochs_run, "rows_per_epoch": trained,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "embeddings_mb": X.nbytes / 2**20, "after_embeddings_mb": base_rss,
        "threads": torch.get_num_threads()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=35_000)
    ap.add_argument("--d", type=int, default=4_096)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--propensity", default="logistic")
    ap.add_argument("--pca-dim", type=int, default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--methods", default="naive,ips,dr,noise,causalrm,causalrm_dr")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    rows = []
    # the first child of a run measured slower whatever its method (cold caches): warm up first
    for k, method in enumerate(["naive"] + args.methods.split(",")):
        cmd = [sys.executable, __file__, "--child", method, "--n", str(args.n), "--d", str(args.d),
               "--epochs", str(1 if k == 0 else args.epochs), "--threads", str(args.threads),
               "--propensity", args.propensity, "--folds", str(args.folds)] \
            + (["--pca-dim", str(args.pca_dim)] if args.pca_dim else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            sys.exit(f"{method} failed:\n{out.stderr[-3000:]}")
        if k:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  done {method}{' (warm-up)' if k == 0 else ''}", file=sys.stderr)
    base = next((r for r in rows if r["method"] == "naive"), rows[0])
    print(f"fit speed: N={args.n:,}, D={args.d:,}, {args.epochs} epochs, propensity {args.propensity} "
          f"({args.folds} folds{', PCA ' + str(args.pca_dim) if args.pca_dim else ''}), "
          f"torch threads {rows[0]['threads']}; embeddings {rows[0]['embeddings_mb']:.0f} MiB")
    print(f"| method | rows/epoch | s/epoch | x naive | nuisance s | peak RSS MiB | x naive |")
    print(f"|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['rows_per_epoch']:,} | {r['s_per_epoch']:.2f} | "
              f"{r['s_per_epoch'] / base['s_per_epoch']:.2f} | {r['nuisance_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
