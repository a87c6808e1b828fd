"""Quality of every method on the built-in default dataset over seeds (docs/method.md's evaluation).

    .venv/bin/python bench/fit_quality.py                     # backbone minilm, seeds 0 1 2
    .venv/bin/python bench/fit_quality.py --seeds 0 1 2 --backbone minilm --params params.yaml
    .venv/bin/python bench/fit_quality.py --heads mlp linear --methods naive causalrm   # head choice
    .venv/bin/python bench/fit_quality.py --heads mlp linear --source shared:wmt-mqm-ted-ende

Seed ``s`` re-draws the simulated feedback (``prepare.simulate.seed = s``: same pairs, so the
embeddings in ``cache/embeddings/<backbone>`` are reused) and seeds the nuisance folds and the
head. Everything is written under a temporary folder: the DVC outputs are never touched. Needs
the default table's pairs embedded (``rmpipe prepare && rmpipe embed --backbone minilm``).
Prints mean ± sd per method and checks that causalrm's R² beats naive's by ≥ 0.05 on average.
``--heads mlp linear`` fits each seed twice, with params' MLP head and with the linear one
(``fit.head.hidden: []``, what ``rmpipe export`` turns into a stock ``*ForSequenceClassification``),
and prints linear − MLP per method. ``--source shared:<set>`` runs on a shared set (dataset named
after it, embedded first: ``rmpipe prepare --dataset <set> --source shared:<set>``).
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

COLUMNS = ("r2", "mae", "rmse", "auroc", "pearson", "spearman", "pairwise_accuracy", "bon_pick", "bon_gap_closed")
HEADS = {"mlp": None, "linear": ()}  # None: params' own hidden sizes


def run_seed(params, backbone: str, seed: int, tmp: Path, methods=None) -> dict[str, dict]:
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
    fit(p, backbone, methods, progress=False, log=lambda line: print(f"  [seed {seed}] {line}", file=sys.stderr))
    reports = evaluate(p, backbone, methods, log=lambda _: None)
    return {m: {**r["metrics"], "noise": r.get("noise_rates"), "runaway": r["fit"]["runaway"]}
            for m, r in reports.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--heads", nargs="+", choices=list(HEADS), default=["mlp"],
                    help="mlp: params' fit.head.hidden; linear: hidden []")
    ap.add_argument("--methods", nargs="+", default=None, help="default: params' fit.methods")
    ap.add_argument("--source", default=None, help="shared:<set>: that set instead of params' source")
    args = ap.parse_args()

    from pipeline.config import load_params

    params = load_params(args.params)
    if args.source:
        kind, _, name = args.source.partition(":")
        if kind != "shared" or not name:
            ap.error(f"--source: expected shared:<set>, got {args.source!r}")
        src = dataclasses.replace(params.prepare.source, kind="shared", name=name)
        params = dataclasses.replace(params, dataset=name, prepare=dataclasses.replace(params.prepare, source=src))
    if params.dataset != "default" or params.prepare.source.kind != "builtin":
        print(f"note: params name dataset {params.dataset!r} from {params.prepare.source.kind}", file=sys.stderr)
    started = time.perf_counter()
    by_head: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="rmpipe-quality-") as tmp:
        for name in args.heads:
            hidden = params.fit.head.hidden if HEADS[name] is None else HEADS[name]
            p = dataclasses.replace(params, fit=dataclasses.replace(
                params.fit, head=dataclasses.replace(params.fit.head, hidden=hidden)))
            by_head[f"{name} {list(hidden)}"] = {
                seed: run_seed(p, args.backbone, seed, Path(tmp) / f"{name}-seed{seed}", args.methods)
                for seed in args.seeds}
    print(f"fit quality: {params.dataset} ({params.prepare.source.kind}), backbone {args.backbone}, "
          f"seeds {args.seeds}, {time.perf_counter() - started:.0f} s; mean ± sd on the clean test split")
    for label, results in by_head.items():
        table(results, args.seeds, label if len(by_head) > 1 else None)
    if len(by_head) == 2:
        compare(*by_head.items(), args.seeds)


def table(results: dict[int, dict], seeds: list[int], head: str | None) -> None:
    methods = list(results[seeds[0]])
    cols = [c for c in COLUMNS if any(results[s][m].get(c) is not None for s in seeds for m in methods)]
    if head:
        print(f"\nhead {head}")
    print("| method | " + " | ".join(cols) + " | runaways |")
    print("|---|" + "---:|" * (len(cols) + 1))
    for m in methods:
        cells = []
        for c in cols:
            v = np.array([results[s][m].get(c) for s in seeds], dtype=float)
            cells.append(f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
        runaways = sum(bool(results[s][m]["runaway"]) for s in seeds)
        print(f"| {m} | " + " | ".join(cells) + f" | {runaways}/{len(seeds)} |")
    for m in methods:
        est = [results[s][m]["noise"] for s in seeds if results[s][m]["noise"]]
        if est:
            e = [(x["estimated"]["rho_pos"], x["estimated"]["rho_neg"]) for x in est]
            r = [(x["realised"]["rho_pos"], x["realised"]["rho_neg"]) for x in est]
            print(f"noise rates ({est[0]['estimated']['source']}): estimated rho_pos/rho_neg "
                  + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in e) + "; realised "
                  + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in r))
            break
    if {"naive", "causalrm"} <= set(methods):
        gain = [results[s]["causalrm"]["r2"] - results[s]["naive"]["r2"] for s in seeds]
        verdict = "PASS" if np.mean(gain) >= 0.05 else "FAIL"
        print(f"causalrm - naive R²: {', '.join(f'{g:+.3f}' for g in gain)}; mean {np.mean(gain):+.3f} "
              f"(needs >= +0.05): {verdict}")


def compare(first: tuple[str, dict], second: tuple[str, dict], seeds: list[int]) -> None:
    """Second head − first head, per method: mean and the per-seed differences (paired seeds)."""
    (a, ra), (b, rb) = first, second
    methods = list(ra[seeds[0]])
    cols = [c for c in ("r2", "mae", "auroc", "bon_pick")
            if all(r[s][m].get(c) is not None for r in (ra, rb) for s in seeds for m in methods)]
    print(f"\n{b} − {a}, per method: mean (per seed)")
    print("| method | " + " | ".join(f"Δ {c}" for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for m in methods:
        cells = []
        for c in cols:
            d = [rb[s][m][c] - ra[s][m][c] for s in seeds]
            cells.append(f"{np.mean(d):+.3f} ({', '.join(f'{x:+.3f}' for x in d)})")
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
