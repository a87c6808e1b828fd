"""Benchmark: every method on real human labels under the paper's protocol, with seeds.

For each data set (the pairwise hh-rlhf harmless-base, PandaLM and LLMBar; the graded
arena-bench-v1 and wmt-mqm-ted-ende; or a user's own rated file, ``--data file:PATH``) × backbone:
simulate observational
feedback (docs/method.md; α = 0.5, target 0.2, (rho_pos, rho_neg) ∈ {(0.1, 0.2), (0.2, 0.1)}), fit
every method per seed (simulation, propensity folds and head all seeded alike) with the true
noise rates and again with anchor-estimated ones, plus an ``oracle`` head — the same head on a
copy with every row observed and ``feedback = label``, i.e. what no real user gives — and score
each on the clean, fully observed test split — R², MAE, AUROC, and where a test prompt has
several rated responses, best-of-N (the rating of the response each head ranks first, against a
random pick and the best) and NDCG. Then an α sweep of causalrm vs naive, and two
semi-synthetic worlds where the reward is learnable (:mod:`bench.worlds`). Debiased methods are
reported as paired per-seed differences from naive with 95% t-intervals.

Stage one (embeddings) is the pipeline's own store: missing pairs are embedded once, so a re-run
costs only the fits. Outputs: ``<out>/paper_protocol.{md,png,json}`` and a per-draw
``records.jsonl`` that ``--resume`` reuses.

    .venv/bin/python bench/paper_protocol.py --quick            # minutes: smoke run
    .venv/bin/python bench/paper_protocol.py                    # full run (< 90 min on 2 cores)
    .venv/bin/python bench/paper_protocol.py --datasets arena-bench-v1 wmt-mqm-ted-ende --backbones minilm --no-worlds
    .venv/bin/python bench/paper_protocol.py --data file:my_rated.jsonl --column rating=stars --backbones minilm --no-worlds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import paper_report as report  # noqa: E402
from bench.notes import OnceNotes  # noqa: E402
from bench.worlds import Draw, EmbeddingWorld, gaussian_draw, shared_draw, shared_params  # noqa: E402
from pipeline.config import METHODS as REGISTRY, FitParams, Params, load_params  # noqa: E402
from pipeline.errors import RmpipeError  # noqa: E402

PAIRWISE = ("hh-rlhf", "pandalm", "llmbar")  # the embedding world is built on these three
GRADED = ("arena-bench-v1", "wmt-mqm-ted-ende")
DATASETS = PAIRWISE + GRADED
BACKBONES = ("minilm", "smollm2-135m")
RHOS = ((0.1, 0.2), (0.2, 0.1))
ALPHAS = (0.5, 0.7, 0.85, 1.0)
METHODS = REGISTRY["explicit"]  # the paper's six, from the methods registry's names


# --- one draw ------------------------------------------------------------------------------
def fit_params(base: FitParams, rho, seed: int, max_epochs: int, patience: int, threads: int) -> FitParams:
    """``base`` with the true rates, this seed everywhere, and capped epochs."""
    return dataclasses.replace(
        base, noise=dataclasses.replace(base.noise, rho_pos=rho[0], rho_neg=rho[1]),
        propensity=dataclasses.replace(base.propensity, seed=seed),
        head=dataclasses.replace(base.head, seed=seed, max_epochs=max_epochs, patience=patience, threads=threads))


def score(draw: Draw, model) -> dict:
    """Metrics of ``σ(f)`` on the clean test split (docs/method.md, "Evaluation")."""
    import torch

    from stages.evaluate import metrics as M

    reward = torch.sigmoid(model.logits(draw.X_test)).numpy().astype(float)
    m = M.label_metrics(draw.y_test, reward)
    out = {k: m.get(k) for k in ("r2", "mae", "rmse", "auroc", "pearson")}
    out["reward_mean"] = float(reward.mean())
    if draw.comparison_test is not None and any(c is not None for c in draw.comparison_test):
        out["pairwise"] = M.pairwise_accuracy(draw.comparison_test, draw.rating_test, reward)["pairwise_accuracy"]
    if draw.group_test is not None and draw.rating_test is not None:
        bon = M.best_of_n(draw.group_test, draw.rating_test, reward)
        if bon.get("bon_groups"):
            out.update({k: bon[k] for k in ("bon_pick", "bon_random", "bon_best", "bon_gap_closed")})
            out["ndcg"] = M.ndcg(draw.group_test, draw.rating_test, reward)
    return out


def run_draw(draw: Draw, fp: FitParams, methods, *, estimated: bool, oracle: bool) -> tuple[list[dict], dict]:
    """Fit the nuisance models once (true rates), every method's head; then the rate-dependent
    heads again with anchor-estimated rates; then the oracle. Returns (fits, diagnostics)."""
    from sklearn.metrics import roc_auc_score

    from stages.fit.core import FitInputs, fit_method, fit_nuisance
    from stages.fit.methods import get_method
    from stages.fit.noise import anchor_rates

    data = FitInputs(draw.X, draw.split, draw.observed, draw.feedback, columns=draw.columns, where="bench")
    ms = [get_method(m) for m in methods]
    nuisance = fit_nuisance(data, fp, ms)
    tr = data.train
    diag = {"obs_rate": draw.realised["observation_rate"], "observed_train": draw.realised["observed"],
            "rho_pos_real": draw.realised.get("rho_pos"), "rho_neg_real": draw.realised.get("rho_neg")}
    if "propensity" in nuisance.diagnostics:
        d = nuisance.diagnostics["propensity"]
        diag.update(prop_auc=d["auc"], ess=d["ess"], ess_share=d["ess_share_of_observed"], clipped=d["share_clipped"])
        if draw.propensity_true is not None and 0 < draw.observed[tr].sum() < tr.sum():
            diag["prop_auc_true_p"] = float(roc_auc_score(draw.observed[tr], draw.propensity_true[tr]))
    if "feedback_model" in nuisance.diagnostics:
        diag["feedback_auc"] = nuisance.diagnostics["feedback_model"]["oof_auc"]
    if "propensity_trust" in nuisance.diagnostics:  # the fit's own "don't trust the correction" flag
        diag["trust_flag"] = bool(nuisance.diagnostics["propensity_trust"]["flag"])

    fits = []

    def fit(method, nuis, rates):
        t0 = time.perf_counter()
        model, res = fit_method(data, nuis, method, fp)
        fits.append({"method": method.name, "rates": rates, **score(draw, model), "best_epoch": res.best_epoch,
                     "epochs": res.epochs_run, "runaway": res.runaway["detected"],
                     "seconds": time.perf_counter() - t0})

    for m in ms:
        fit(m, nuisance, "true")
    if estimated and nuisance.noisy_score is not None:
        try:
            est = anchor_rates(nuisance.noisy_score[tr & data.observed], fp.noise.q)
            diag.update(rho_pos_hat=est.rho_pos, rho_neg_hat=est.rho_neg, d_hat=est.d)
        except RmpipeError as exc:  # d ≈ 0: the anchors collapsed
            est, diag["estimation_failed"] = None, str(exc)
        for m in ms:
            if not m.needs_rates:  # the same head as with true rates (same seed): reuse it
                fits.append({**next(f for f in fits if f["method"] == m.name), "rates": "estimated"})
            elif est is not None:
                fit(m, dataclasses.replace(nuisance, rates=est), "estimated")
    if oracle and draw.propensity_true is not None and "causalrm" in methods:
        true_p = np.clip(draw.propensity_true, fp.propensity.clip_min, 1.0)  # what no real log has
        m = get_method("causalrm")
        t0 = time.perf_counter()
        model, res = fit_method(data, dataclasses.replace(nuisance, propensity=true_p), m, fp)
        fits.append({"method": "causalrm_true_p", "rates": "true", **score(draw, model), "best_epoch": res.best_epoch,
                     "epochs": res.epochs_run, "runaway": res.runaway["detected"],
                     "seconds": time.perf_counter() - t0})
    if oracle:
        clean = FitInputs(draw.X, draw.split, np.ones(len(draw.X), bool), draw.label, where="bench:oracle")
        naive = get_method("naive")
        model, res = fit_method(clean, fit_nuisance(clean, fp, [naive]), naive, fp)
        fits.append({"method": "oracle", "rates": "clean labels", **score(draw, model), "best_epoch": res.best_epoch,
                     "epochs": res.epochs_run, "runaway": False, "seconds": 0.0})
    return fits, diag


def _agree(a, b) -> bool:
    """Settings agree where both name them: a field added since an older run is no difference."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_agree(a[k], b[k]) for k in a.keys() & b.keys())
    return a == b


def merge_runs(folders: list[Path]) -> tuple[dict, list[dict]]:
    """Several runs' ``paper_protocol.json`` as one: the records concatenated, the meta summed.
    Runs fitted under other settings, or a draw fitted twice, would make one table of two
    experiments, so either is refused naming the folder."""
    metas, records, seen = [], [], {}
    for folder in folders:
        path = folder / "paper_protocol.json"
        if not path.exists():
            raise RmpipeError(f"{path}: no such file (run the benchmark with --out {folder} first)")
        saved = json.loads(path.read_text())
        if metas and not _agree(saved["meta"]["settings"], metas[0]["settings"]):
            raise RmpipeError(f"{path}: fitted under other settings than {folders[0]} (fit params, epochs "
                              f"or methods differ): one table cannot hold both")
        for rec in saved["records"]:
            key = job_key(rec["job"])
            if key in seen:
                raise RmpipeError(f"{path}: draw {key} is also in {seen[key]}")
            seen[key] = folder
            records.append(rec)
        metas.append(saved["meta"])
    meta = {**metas[0], "command": " + ".join(m["command"] for m in metas),
            "wall_seconds": sum(m["wall_seconds"] for m in metas), "draws": len(records),
            **{k: sorted({x for m in metas for x in m[k]}, key=str) for k in ("seeds", "alphas", "backbones", "datasets")}}
    return meta, records


# --- the plan ------------------------------------------------------------------------------
def plan(args) -> list[dict]:
    """Every draw to fit, in order: (part, world, dataset, backbone, rho, alpha, seed)."""
    jobs = []
    for backbone in args.backbones:
        for dataset in args.datasets:
            for rho in RHOS:
                for seed in args.seeds:
                    jobs.append(dict(part="main", world="real", dataset=dataset, backbone=backbone,
                                     rho=list(rho), alpha=0.5, seed=seed))
            for alpha in args.alphas:
                if alpha != 0.5:
                    for seed in args.seeds:
                        jobs.append(dict(part="alpha", world="real", dataset=dataset, backbone=backbone,
                                         rho=list(RHOS[0]), alpha=alpha, seed=seed))
        if not args.no_worlds:
            for rho in RHOS:
                for seed in args.seeds:
                    jobs.append(dict(part="world", world="embedding", dataset="all shared texts",
                                     backbone=backbone, rho=list(rho), alpha=0.5, seed=seed))
    if not args.no_worlds:
        for rho in RHOS:
            for seed in args.seeds:
                jobs.append(dict(part="world", world="gaussian", dataset=f"N={args.gaussian_n}",
                                 backbone=f"gaussian-{args.gaussian_dim}d", rho=list(rho), alpha=0.5, seed=seed))
    return jobs


def job_key(job: dict) -> str:
    return json.dumps({k: job[k] for k in ("part", "world", "dataset", "backbone", "rho", "alpha", "seed")},
                      sort_keys=True)


# --- embeddings ----------------------------------------------------------------------------
def load_embeddings(params: Params, backbone: str, datasets, columns=None) -> tuple[dict[str, int], np.ndarray, dict]:
    """Embed what the store lacks (stage one, once), then read every pair of ``datasets``.
    Returns (pair_id -> row, matrix, {dataset: prepared frame of seed 0})."""
    import polars as pl

    from pipeline.store import EmbeddingStore
    from stages.embed.run import embed
    from stages.prepare.run import build

    frames = {d: build(shared_params(params, d, 0.5, RHOS[0], 0, columns), where=f"bench:{d}")[0] for d in datasets}
    pairs = pl.concat([f.select("pair_id", "prompt", "response") for f in frames.values()]).unique(
        subset="pair_id", keep="first", maintain_order=True)
    import torch
    from threadpoolctl import threadpool_limits

    t0, fit_threads, cores = time.perf_counter(), torch.get_num_threads(), os.cpu_count() or 1
    torch.set_num_threads(cores)  # the forward passes use every core; the small fits run on --threads
    try:
        with threadpool_limits(cores):
            summary = embed(params, backbone, table=pairs, progress=True)
    finally:
        torch.set_num_threads(fit_threads)
    log(f"  {summary.line()} ({time.perf_counter() - t0:.0f} s)")
    ids = pairs["pair_id"].to_list()
    X = EmbeddingStore(params.store_path(backbone)).read(ids)
    return {p: i for i, p in enumerate(ids)}, X, frames


def log(line: str) -> None:
    print(line, flush=True)


# --- main ----------------------------------------------------------------------------------
def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 15 epochs, α ∈ {0.5, 1.0}, N=10,000")
    ap.add_argument("--backbones", nargs="*", default=None, help=f"default: {' '.join(BACKBONES)} (quick: minilm); none: Gaussian world only")
    ap.add_argument("--datasets", nargs="+", default=None, choices=DATASETS,
                    help=f"default: {' '.join(DATASETS)} (with --data: none)")
    ap.add_argument("--data", action="append", default=[], metavar="file:PATH",
                    help="a rated file of your own (parquet, jsonl, jsonl.gz, csv; needs a rating or label column)")
    ap.add_argument("--column", action="append", default=[], metavar="CONTRACT=YOURS",
                    help="--data's column mapping, as `rmpipe prepare --column` (repeatable)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 5; quick 2)")
    ap.add_argument("--max-epochs", type=int, default=None, help="head epochs cap (default 60; quick 15)")
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--alphas", nargs="+", type=float, default=None, help="α sweep (default 0.5 0.7 0.85 1.0)")
    ap.add_argument("--gaussian-n", type=int, default=None, help="Gaussian world size (default 30000; quick 10000)")
    ap.add_argument("--gaussian-dim", type=int, default=16)
    ap.add_argument("--no-worlds", action="store_true", help="skip the two semi-synthetic worlds")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (fits are small: 1 is fastest)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--out", default=None, help="output folder (default reports/bench/{full,quick})")
    ap.add_argument("--resume", action="store_true", help="reuse draws already in <out>/records.jsonl")
    ap.add_argument("--report-only", action="store_true", help="rewrite the tables and figure from <out>/paper_protocol.json")
    ap.add_argument("--merge", nargs="+", type=Path, metavar="DIR",
                    help="one report in --out from several runs' folders (e.g. one per backbone); "
                         "their settings must agree and no draw may repeat")
    args = ap.parse_args(argv)
    for d in args.data:
        if not d.startswith("file:"):
            ap.error(f"--data {d}: expected file:PATH")
    bad = [c for c in args.column if "=" not in c]
    if bad:
        ap.error(f"--column {bad[0]}: expected CONTRACT=YOURS")
    args.columns = dict(c.split("=", 1) for c in args.column)
    if args.datasets is None:
        args.datasets = [] if args.data else list(DATASETS)
    args.datasets = list(args.datasets) + list(args.data)
    q = args.quick
    if args.backbones is None:
        args.backbones = ["minilm"] if q else list(BACKBONES)
    args.seeds = list(range(args.seeds if args.seeds is not None else (2 if q else 5)))
    args.max_epochs = args.max_epochs or (15 if q else 60)
    args.alphas = args.alphas or ([0.5, 1.0] if q else list(ALPHAS))
    args.gaussian_n = args.gaussian_n or (10000 if q else 30000)
    args.out = Path(args.out or REPO / "reports" / "bench" / ("quick" if q else "full"))
    return args


def main(argv=None) -> int:
    import torch

    from threadpoolctl import threadpool_limits

    args = parse(argv)
    if args.merge:
        try:
            meta, records = merge_runs(args.merge)
        except RmpipeError as exc:
            print(f"paper_protocol: {exc}", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "paper_protocol.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
        log(f"merged {len(records)} draws from {len(args.merge)} runs: {report.write(records, meta, args.out)}")
        return 0
    if args.report_only:
        saved = json.loads((args.out / "paper_protocol.json").read_text())
        log(f"rewrote {report.write(saved['records'], saved['meta'], args.out)}")
        return 0
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # BLAS: two threads on a shared 2-core box ran the nuisance fits 5x slower
    params = load_params(args.params)
    settings = {"max_epochs": args.max_epochs, "patience": args.patience, "gaussian_dim": args.gaussian_dim,
                "methods": list(METHODS), "fit": dataclasses.asdict(params.fit)}
    settings = json.loads(json.dumps(settings))  # as records.jsonl reads it back (tuples are lists)
    args.out.mkdir(parents=True, exist_ok=True)
    records_path = args.out / "records.jsonl"
    done = {}
    if args.resume and records_path.exists():
        for line in records_path.read_text().splitlines():
            r = json.loads(line)
            if r["settings"] == settings:
                done[job_key(r["job"])] = r
    elif records_path.exists():
        records_path.unlink()
    jobs = plan(args)
    log(f"paper_protocol: {len(jobs)} draws ({len(done)} reused), backbones {args.backbones}, datasets "
        f"{args.datasets}, seeds {args.seeds}, ≤{args.max_epochs} epochs (patience {args.patience}), "
        f"α sweep {args.alphas}, threads {args.threads} -> {args.out}")
    started, cache, records, notes = time.perf_counter(), {}, [], OnceNotes(log)
    fitted = 0
    for i, job in enumerate(jobs, 1):
        key = job_key(job)
        if key in done:
            records.append(done[key])
            continue
        t0 = time.perf_counter()
        rho, alpha, seed = tuple(job["rho"]), job["alpha"], job["seed"]
        try:
            draw = make_draw(job, args, params, cache)
        except RmpipeError as exc:  # data or embeddings: every later draw would fail alike
            print(f"paper_protocol: {exc}", file=sys.stderr)
            return 2
        try:
            fp = fit_params(params.fit, rho, seed, args.max_epochs, args.patience, args.threads)
            methods = METHODS if job["part"] != "alpha" else ("naive", "causalrm")
            with notes.collect():
                fits, diag = run_draw(draw, fp, methods, estimated=job["part"] != "alpha", oracle=job["part"] != "alpha")
            rec = {"job": job, "settings": settings, "fits": fits, "diag": diag, "seconds": time.perf_counter() - t0}
        except RmpipeError as exc:
            rec = {"job": job, "settings": settings, "fits": [], "diag": {"error": str(exc)},
                   "seconds": time.perf_counter() - t0}
        records.append(rec)
        with open(records_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        fitted += 1
        elapsed = time.perf_counter() - started
        eta = elapsed / fitted * (len(jobs) - i)
        by = {f["method"]: f["r2"] for f in rec["fits"] if f["rates"] in ("true", "clean labels")}
        r2 = " ".join(f"{m} {v:+.3f}" for m, v in by.items() if v is not None) or rec["diag"].get("error", "")
        log(f"[{i}/{len(jobs)}] {job['part']} {job['dataset']}/{job['backbone']} rho={rho} α={alpha} seed {seed}: "
            f"R² {r2} ({rec['seconds']:.1f} s; elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min)")
    wall = time.perf_counter() - started
    meta = {"command": " ".join(["bench/paper_protocol.py", *(sys.argv[1:] if argv is None else argv)]),
            "wall_seconds": wall, "draws": len(jobs), "settings": settings, "seeds": args.seeds,
            "alphas": args.alphas, "backbones": args.backbones, "datasets": args.datasets,
            "gaussian_n": args.gaussian_n, "threads": args.threads}
    (args.out / "paper_protocol.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    md = report.write(records, meta, args.out)
    for line in notes.summary():
        log(line)
    log(f"done in {wall / 60:.1f} min: {md}")
    return 0


def make_draw(job: dict, args, params: Params, cache: dict) -> Draw:
    """The job's simulated data set; embeddings and the embedding world are built once."""
    rho, alpha, seed, backbone = tuple(job["rho"]), job["alpha"], job["seed"], job["backbone"]
    if job["world"] == "gaussian":
        return gaussian_draw(args.gaussian_n, args.gaussian_dim, alpha, rho, seed)
    if backbone not in cache:
        log(f"embeddings: {backbone}")
        cache.clear()  # one backbone's matrices at a time
        need = list(dict.fromkeys(args.datasets + ([] if args.no_worlds else list(PAIRWISE))))
        cache[backbone] = load_embeddings(params, backbone, need, args.columns)
    X_of, X, frames = cache[backbone]
    if job["world"] == "real":
        return shared_draw(params, job["dataset"], alpha, rho, seed, X_of, X, args.columns)
    if "world" not in cache:
        rows = [(f"{d}:{g}", c and f"{d}:{c}", X_of[p]) for d, f in frames.items() if d in PAIRWISE
                for g, c, p in zip(f["group_id"], f["comparison_id"], f["pair_id"])]
        groups, comparisons, idx = zip(*rows)
        cache["world"] = EmbeddingWorld.build(X[np.array(idx)], groups, comparisons)
        log(f"embedding world: {len(idx)} rows, levels {np.bincount(cache['world'].level.astype(int)).tolist()}")
    return cache["world"].draw(alpha, rho, seed)


if __name__ == "__main__":
    sys.exit(main())
