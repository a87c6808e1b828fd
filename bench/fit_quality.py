"""Quality of every method on the built-in default dataset over seeds (METHOD.md's evaluation).

    .venv/bin/python bench/fit_quality.py                     # backbone minilm, seeds 0 1 2
    .venv/bin/python bench/fit_quality.py --seeds 0 1 2 --backbone minilm --params params.yaml

Seed ``s`` re-draws the simulated feedback (``prepare.simulate.seed = s``: same pairs, so the
embeddings in ``cache/embeddings/<backbone>`` are reused) and seeds the nuisance folds and the
head. Everything is written under a temporary folder: the DVC outputs are never touched. Needs
the default table's pairs embedded (``rmpipe prepare && rmpipe embed --backbone minilm``).
Prints mean ± sd per method and checks that causalrm's R² beats naive's by ≥ 0.05 on average.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ("r2", "mae", "rmse", "auroc", "pearson", "spearman", "pairwise_accuracy")


def run_seed(params, backbone: str, seed: int, tmp: Path) -> dict[str, dict]:
    from stages.evaluate.run import evaluate
    from stages.fit.run import fit
    from stages.prepare.run import prepare

    fp = params.fit
    p = dataclasses.replace(
        params, data_dir=str(tmp / "data"),
        prepare=dataclasses.replace(params.prepare, simulate=dataclasses.replace(params.prepare.simulate, seed=seed)),
        fit=dataclasses.replace(fp, heads_dir=str(tmp / "heads"),
                                head=dataclasses.replace(fp.head, seed=seed),
                                propensity=dataclasses.replace(fp.propensity, seed=seed)),
        evaluate=dataclasses.replace(params.evaluate, reports_dir=str(tmp / "reports")))
    prepare(p, where=f"bench seed {seed}")
    fit(p, backbone, progress=False, log=lambda line: print(f"  [seed {seed}] {line}", file=sys.stderr))
    reports = evaluate(p, backbone, log=lambda _: None)
    return {m: {**r["metrics"], "noise": r.get("noise_rates"), "runaway": r["fit"]["runaway"]}
            for m, r in reports.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()

    from pipeline.config import load_params

    params = load_params(args.params)
    if params.dataset != "default" or params.prepare.source.kind != "builtin":
        print(f"note: params name dataset {params.dataset!r} from {params.prepare.source.kind}", file=sys.stderr)
    results: dict[int, dict] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rmpipe-quality-") as tmp:
        for seed in args.seeds:
            results[seed] = run_seed(params, args.backbone, seed, Path(tmp) / f"seed{seed}")
    methods = list(results[args.seeds[0]])
    cols = [c for c in COLUMNS if any(results[s][m].get(c) is not None for s in args.seeds for m in methods)]
    print(f"fit quality: {params.dataset} ({params.prepare.source.kind}), backbone {args.backbone}, "
          f"seeds {args.seeds}, {time.perf_counter() - started:.0f} s; mean ± sd on the clean test split")
    print("| method | " + " | ".join(cols) + " | runaways |")
    print("|---|" + "---:|" * (len(cols) + 1))
    for m in methods:
        cells = []
        for c in cols:
            v = np.array([results[s][m].get(c) for s in args.seeds], dtype=float)
            cells.append(f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
        runaways = sum(bool(results[s][m]["runaway"]) for s in args.seeds)
        print(f"| {m} | " + " | ".join(cells) + f" | {runaways}/{len(args.seeds)} |")
    for m in methods:
        est = [results[s][m]["noise"] for s in args.seeds if results[s][m]["noise"]]
        if est:
            e = [(x["estimated"]["rho_pos"], x["estimated"]["rho_neg"]) for x in est]
            r = [(x["realised"]["rho_pos"], x["realised"]["rho_neg"]) for x in est]
            print(f"noise rates ({est[0]['estimated']['source']}): estimated rho_pos/rho_neg "
                  + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in e) + "; realised "
                  + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in r))
            break
    if {"naive", "causalrm"} <= set(methods):
        gain = [results[s]["causalrm"]["r2"] - results[s]["naive"]["r2"] for s in args.seeds]
        verdict = "PASS" if np.mean(gain) >= 0.05 else "FAIL"
        print(f"causalrm - naive R²: {', '.join(f'{g:+.3f}' for g in gain)}; mean {np.mean(gain):+.3f} "
              f"(needs >= +0.05): {verdict}")


if __name__ == "__main__":
    main()
