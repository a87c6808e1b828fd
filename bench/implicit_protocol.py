"""Benchmark: implicit feedback (clicks/copies, positive-unlabelled) under the reference's PU protocol.

For each data set (the built-in default world; with ``--real`` also the graded shared sets
arena-bench-v1 and wmt-mqm-ted-ende) and seed: the pipeline's own prepare stage in implicit
mode (``p = α^(5 − s')`` scaled to target 0.2, ``a = y · Bernoulli(p)``, optional mis-clicks at
``rho_neg`` on ``y = 0``), then every implicit method on the same frozen embeddings, plus an
``oracle`` head (the same head on clean labels of every train row). Methods are run with the
quantity each needs either *estimated* (no truth used) or *known* (the simulation's truth):

- ``pu_naive``: nothing;  ``scar``: ĉ (Elkan & Noto e1);  ``nnpu[π̂]``: π̂ = P(a=1)/ĉ;
- ``upu[π]`` / ``nnpu[π]``: the true class prior of the train split;
- ``sar[e]``: the true labelling propensity as ``propensity_logged``;
- ``sar[ê(len)]``: no propensity_logged; ``e`` by SAR-EM with the response's length (characters,
  a column any log has) as the propensity attribute (``fit.pu.propensity_columns``). The world's
  labelling depends on the latent grade, not on length: length is a proxy the assumption
  only approximately meets;
- ``sar_noise[e,ρ]`` / ``sar_noise[ê(len),ρ]``: the same plus the true mis-click rate (mis-click
  setting only).

Scored on the clean test split: R², MAE, AUROC, and best-of-N where a test prompt has several
rated responses. Paired per-seed differences from ``pu_naive`` with 95% t-intervals.

    .venv/bin/python bench/implicit_protocol.py --store-dir /work/main/cache/embeddings [--real]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import ImplicitSimParams, Params, PUParams, SourceParams, load_params  # noqa: E402
from stages.evaluate import metrics as M  # noqa: E402
from stages.fit.core import FitInputs, fit_method, fit_nuisance  # noqa: E402
from stages.fit.methods import get_method  # noqa: E402
from stages.prepare.run import build  # noqa: E402

REAL = ("arena-bench-v1", "wmt-mqm-ted-ende")
METRICS = ("r2", "mae", "auroc", "bon_gap_closed")


def best_of_n(groups, rating, reward) -> dict:
    """docs/method.md's best-of-N: per group of ≥ 2 rated responses, the rating of the top-reward one
    (ties: their mean) against the group's mean and max; share of the gap closed (ratio of sums)."""
    fn = getattr(M, "best_of_n", None)
    if fn is not None:
        return fn(groups, rating, reward)
    by: dict = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    pick, rand, best = [], [], []
    for rows in by.values():
        if len(rows) < 2:
            continue
        s, r = np.asarray(rating)[rows], np.asarray(reward)[rows]
        pick.append(s[r == r.max()].mean())
        rand.append(s.mean())
        best.append(s.max())
    if not pick:
        return {"bon_groups": 0}
    gap = np.sum(best) - np.sum(rand)
    return {"bon_groups": len(pick), "bon_pick": float(np.mean(pick)), "bon_random": float(np.mean(rand)),
            "bon_best": float(np.mean(best)),
            "bon_gap_closed": float((np.sum(pick) - np.sum(rand)) / gap) if gap > 0 else None}


def params_for(base: Params, dataset: str, seed: int, rho_neg: float) -> Params:
    pp = base.prepare
    src = SourceParams(kind="builtin", rows=pp.source.rows) if dataset == "default" else SourceParams(kind="shared", name=dataset)
    sim = dataclasses.replace(pp.simulate, enabled=True, seed=seed,
                              implicit=ImplicitSimParams(rho_neg=rho_neg, log_propensity=True))
    return dataclasses.replace(base, dataset=f"{dataset}-implicit", prepare=dataclasses.replace(
        pp, source=src, simulate=sim, feedback="implicit"))


def embeddings(params: Params, backbone: str, df) -> np.ndarray:
    from pipeline.store import EmbeddingStore
    from stages.embed.run import embed

    pairs = df.select("pair_id", "prompt", "response").unique(subset="pair_id", maintain_order=True)
    embed(params, backbone, table=pairs, progress=False)  # a no-op where the store has them
    return EmbeddingStore(params.store_path(backbone)).read(df["pair_id"].to_list())


def score(model, X, y, rating, groups) -> dict:
    import torch

    reward = torch.sigmoid(model.logits(X)).numpy().astype(float)
    m = M.label_metrics(y, reward)
    out = {k: m.get(k) for k in ("r2", "mae", "auroc")}
    bon = best_of_n(groups, rating, reward)
    out["bon_gap_closed"] = bon.get("bon_gap_closed") if bon.get("bon_groups") else None
    return out


def run_draw(params: Params, dataset: str, seed: int, rho_neg: float, backbone: str, X_cache: dict,
             epochs: int, patience: int) -> dict:
    import polars as pl

    p = params_for(params, dataset, seed, rho_neg)
    df, report = build(p, where=f"bench:{dataset}")
    if dataset not in X_cache:
        X_cache[dataset] = dict(zip(df["pair_id"].to_list(), embeddings(p, backbone, df)))
    X_of = X_cache[dataset]
    fit_df, test = df.filter(pl.col("split") != "test"), df.filter(pl.col("split") == "test")
    X = np.stack([X_of[i] for i in fit_df["pair_id"].to_list()])
    Xt = np.stack([X_of[i] for i in test["pair_id"].to_list()])
    split = fit_df["split"].to_numpy().astype(str)
    a = fit_df["feedback"].to_numpy().astype(int)
    y = fit_df["label"].to_numpy().astype(int)
    e_true = fit_df["propensity_true"].to_numpy()
    tr = split == "train"
    pi_true = float(y[tr].mean())
    fp = dataclasses.replace(p.fit, propensity=dataclasses.replace(p.fit.propensity, seed=seed),
                             head=dataclasses.replace(p.fit.head, seed=seed, max_epochs=epochs, patience=patience, threads=1))
    args = (Xt, test["label"].to_numpy().astype(float), test["rating"].to_numpy(), test["group_id"].to_list())
    data = FitInputs(X, split, np.ones(len(X), bool), a, propensity_logged=e_true, kind="implicit", where="bench")
    fits, t0 = [], time.perf_counter()

    def fit(label, method, fparams, nuisance=None, inputs=data):
        m = get_method(method)
        nuis = nuisance or fit_nuisance(inputs, fparams, [m])
        model, res = fit_method(inputs, nuis, m, fparams)
        fits.append({"method": label, **score(model, *args), "best_epoch": res.best_epoch,
                     "runaway": res.runaway["detected"]})
        return nuis

    est = fit_nuisance(data, fp, [get_method("scar"), get_method("nnpu")])  # ĉ and π̂ once
    fit("pu_naive", "pu_naive", fp)
    fit("scar[ĉ]", "scar", fp, est)
    fit("nnpu[π̂]", "nnpu", fp, est)
    known = dataclasses.replace(fp, pu=PUParams(prior=pi_true, rho_neg=rho_neg))
    fit("upu[π]", "upu", known)
    fit("nnpu[π]", "nnpu", known)
    fit("sar[e]", "sar", known)
    chars = fit_df["response"].str.len_chars().to_numpy().astype(float)
    unlogged = FitInputs(X, split, np.ones(len(X), bool), a, columns={"response_chars": chars},
                         kind="implicit", where="bench")
    by_len = dataclasses.replace(known, pu=dataclasses.replace(known.pu, propensity_columns=("response_chars",)))
    e_fit = fit("sar[ê(len)]", "sar", by_len, inputs=unlogged)
    if rho_neg > 0:
        fit("sar_noise[e,ρ]", "sar_noise", known)
        fit("sar_noise[ê(len),ρ]", "sar_noise", by_len, inputs=unlogged)
    pos = tr & (y == 1)
    e_hat = e_fit.pu.labelling
    oracle = FitInputs(X, split, np.ones(len(X), bool), y, where="bench:oracle")
    naive = get_method("naive")
    model, res = fit_method(oracle, fit_nuisance(oracle, fp, [naive]), naive, fp)
    fits.append({"method": "oracle", **score(model, *args), "best_epoch": res.best_epoch, "runaway": False})
    z = report["feedback"]["realised_by_split"]["train"]
    diag = {"pi_true": pi_true, "pi_hat": est.pu.prior, "c_true": z["positives_acted_on"], "c_hat": est.pu.c,
            "acted_rate": z["acted_rate"], "misclick": z["misclick_rate"], "scar_holds": z["scar_holds"],
            "g_auc": est.diagnostics["pu"]["action_model"]["oof_auc"], "rows_train": int(tr.sum()),
            "e_mae": float(np.abs(e_hat - np.maximum(e_true, fp.propensity.clip_min))[pos].mean()),
            "e_corr": float(np.corrcoef(e_hat[pos], e_true[pos])[0, 1]), "e_hat_mean": float(e_hat[pos].mean()),
            "em_prior": e_fit.diagnostics["pu"]["labelling"]["em_prior"],
            "e_iters": e_fit.diagnostics["pu"]["labelling"]["em_iterations"],
            "seconds": time.perf_counter() - t0}
    return {"dataset": dataset, "seed": seed, "rho_neg": rho_neg, "fits": fits, "diag": diag}


# --- tables --------------------------------------------------------------------------------
def interval(d: np.ndarray) -> str:
    from scipy.stats import t

    d = d[~np.isnan(d)]
    if len(d) < 2:
        return "–"
    h = t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    star = "*" if abs(d.mean()) > h else ""
    return f"{d.mean():+.3f} ± {h:.3f}{star}"


def tables(records: list[dict]) -> str:
    out = []
    keys = sorted({(r["dataset"], r["rho_neg"]) for r in records}, key=lambda k: (k[0] != "default", k))
    for dataset, rho in keys:
        recs = [r for r in records if r["dataset"] == dataset and r["rho_neg"] == rho]
        methods = list(dict.fromkeys(f["method"] for r in recs for f in r["fits"]))
        val = {m: {k: np.array([next((f[k] for f in r["fits"] if f["method"] == m), None) or np.nan
                                 for r in recs], dtype=float) for k in METRICS} for m in methods}
        has_bon = not np.isnan(val["oracle"]["bon_gap_closed"]).all()
        cols = [c for c in METRICS if c != "bon_gap_closed" or has_bon]
        d = {k: np.array([r["diag"][k] for r in recs], dtype=float)
             for k in ("pi_true", "pi_hat", "c_true", "c_hat", "acted_rate", "misclick", "g_auc", "e_mae", "e_corr", "e_hat_mean", "em_prior")}
        out += [f"### {dataset}, mis-clicks rho_neg = {rho} ({len(recs)} seeds, {recs[0]['diag']['rows_train']} train rows)", "",
                f"acted rate {d['acted_rate'].mean():.3f}; π true {d['pi_true'].mean():.3f} vs π̂ {d['pi_hat'].mean():.3f}; "
                f"c true {d['c_true'].mean():.3f} vs ĉ {d['c_hat'].mean():.3f}; mis-clicks {d['misclick'].mean():.3f}; "
                f"AUC of g(x)≈P(a=1|x) {d['g_auc'].mean():.3f}; SCAR holds: {recs[0]['diag']['scar_holds']}; "
                f"ê(len) vs e on train positives: mean {d['e_hat_mean'].mean():.3f} vs {d['c_true'].mean():.3f}, "
                f"MAE {d['e_mae'].mean():.3f}, correlation {d['e_corr'].mean():.3f}; SAR-EM's π {d['em_prior'].mean():.3f}", "",
                "| method | " + " | ".join(cols) + " | " + " | ".join(f"Δ{c} vs pu_naive" for c in cols) + " |",
                "|---|" + "---:|" * (2 * len(cols))]
        for m in methods:
            means = [f"{np.nanmean(val[m][c]):.3f}" for c in cols]
            diffs = [interval(val[m][c] - val["pu_naive"][c]) if m != "pu_naive" else "–" for c in cols]
            out.append(f"| {m} | " + " | ".join(means) + " | " + " | ".join(diffs) + " |")
        out.append("")
    out.append("Δ: mean paired per-seed difference ± 95% t half-width; * = interval excludes 0. "
               "MAE: lower is better.")
    return "\n".join(out)


def main(argv=None) -> int:
    import torch
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", action="store_true", help=f"also {', '.join(REAL)}")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=None, help="built-in world size (default params)")
    ap.add_argument("--misclick", type=float, default=0.05, help="the mis-click setting (default world)")
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--store-dir", default=None)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--out", default=str(REPO / "reports" / "bench" / "implicit"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    threadpool_limits(1)
    params = load_params(args.params)
    if args.store_dir:
        params = dataclasses.replace(params, embed=dataclasses.replace(params.embed, store_dir=args.store_dir))
    if args.rows:
        params = dataclasses.replace(params, prepare=dataclasses.replace(
            params.prepare, source=dataclasses.replace(params.prepare.source, rows=args.rows)))
    plan = [("default", 0.0), ("default", args.misclick)] + ([(d, 0.0) for d in REAL] if args.real else [])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, X_cache, started = [], {}, time.perf_counter()
    for dataset, rho in plan:
        for seed in range(args.seeds):
            rec = run_draw(params, dataset, seed, rho, args.backbone, X_cache, args.max_epochs, args.patience)
            records.append(rec)
            r2 = " ".join(f"{f['method']} {f['r2']:+.3f}" for f in rec["fits"])
            print(f"{dataset} rho_neg={rho} seed {seed}: {r2} ({rec['diag']['seconds']:.0f} s, "
                  f"elapsed {(time.perf_counter() - started) / 60:.1f} min)", flush=True)
            (out / "records.json").write_text(json.dumps(records, indent=1))
    md = (f"# Implicit feedback benchmark\n\n`bench/implicit_protocol.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
          f"({(time.perf_counter() - started) / 60:.1f} min, backbone {args.backbone}, ≤{args.max_epochs} epochs)\n\n"
          + tables(records) + "\n")
    (out / "implicit_protocol.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
