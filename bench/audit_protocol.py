"""Benchmark: what a randomised audit buys (docs/audit.md), on simulated and on real selection.

Simulated sets (the built-in default world and the shared arena-bench-v1, wmt-mqm-ted-ende,
hh-rlhf; or ``--data file:PATH``, a user's rated file): the paper's protocol (α = 0.5, target 0.2,
both noise settings) plus an audit of ``--shares`` of the non-test rows answered with the same
flips. Real selection (``coat``): Schnabel et al.'s shoppers, their chosen ratings as the logs and a
share of their random ratings as the audit (``--coat-shares``, of each shopper's 16), the split
by shopper re-drawn per seed, noise rates 0 (a rating is the shopper's own).

Per draw, every head scored on the clean test split (R², MAE, AUROC, best-of-N, NDCG):
``naive``; ``causalrm`` with the embedding propensity (``causalrm_emb``); ``causalrm`` and
``causalrm_dr`` with the audit propensity (``*_audit``); the two heads a user tries first,
``audit_only`` and ``logs_plus_audit``; audit early stopping (``causalrm_audit+select``) and
audit calibration (``causalrm_audit+calib``, ``naive+calib``) as variants; ``audit_choice``, the
head among those with the lowest val-audit risk (method choice on the audit, no clean label);
and where the truth exists ``causalrm_true_p`` and the ``oracle``. With ``--estimated``, the
rate-dependent audit heads again with anchor-estimated rates.

    .venv/bin/python bench/audit_protocol.py --datasets default coat --seeds 5 --out reports/bench/audit
    .venv/bin/python bench/audit_protocol.py --data file:my_logs_with_audit.parquet ...   # your own audit
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

from bench.paper_protocol import score  # noqa: E402
from bench.worlds import source_of  # noqa: E402
from pipeline.config import Params, SourceParams, load_params  # noqa: E402
from pipeline.errors import RmpipeError  # noqa: E402

SIMULATED = ("default", "arena-bench-v1", "wmt-mqm-ted-ende", "hh-rlhf")
RHOS = ((0.1, 0.2), (0.2, 0.1))
CHOICE = ("naive", "causalrm_emb", "causalrm_audit", "causalrm_dr_audit", "audit_only", "logs_plus_audit")


@dataclasses.dataclass
class AuditDraw:
    """What a fit may see (``data``), the clean test split, and the truth for the train rows."""

    data: object  # stages.fit.core.FitInputs
    X_test: np.ndarray
    y_test: np.ndarray
    rating_test: np.ndarray | None
    group_test: list | None
    label: np.ndarray | None  # train/val clean labels where known (oracle, π truth)
    propensity_true: np.ndarray | None
    comparison_test: list | None = None


def draw_params(base: Params, dataset: str, share: float, rho, seed: int, columns=None) -> Params:
    pp = base.prepare
    if dataset == "coat":
        src = SourceParams(kind="shared", name="coat", audit_share=share, seed=seed)
        return dataclasses.replace(base, dataset="coat", prepare=dataclasses.replace(
            pp, source=src, split=dataclasses.replace(pp.split, seed=seed)))
    src = SourceParams(kind="builtin") if dataset == "default" else source_of(dataset, columns)
    sim = dataclasses.replace(pp.simulate, enabled=True, alpha=0.5, rho_pos=rho[0], rho_neg=rho[1], seed=seed,
                              audit_share=share, audit_labels="noisy")
    # a user's file with its own observed (and audit) columns is read as logged: the simulation,
    # and so the share, do not apply to it (run it with --shares 0)
    return dataclasses.replace(base, dataset=dataset.replace(":", "-").replace("/", "_"),
                               prepare=dataclasses.replace(pp, source=src, simulate=sim))


def make_draw(params: Params, X_of: dict, X: np.ndarray) -> AuditDraw:
    import polars as pl

    from stages.fit.core import FitInputs
    from stages.prepare.run import build

    df, _ = build(params, where=f"bench:{params.dataset}")
    fit, test = df.filter(pl.col("split") != "test"), df.filter(pl.col("split") == "test")
    idx = np.array([X_of[p] for p in fit["pair_id"].to_list()])
    data = FitInputs(X[idx], fit["split"].to_numpy(), fit["observed"].to_numpy(), fit["feedback"].fill_null(0).to_numpy(),
                     columns={c: fit[c].to_numpy() for c in params.fit.row_columns if c in fit.columns},
                     where="bench", audit=fit["audit"].fill_null(False).to_numpy())
    p_true = fit["propensity_true"].to_numpy() if fit["propensity_true"].null_count() == 0 else None
    label = fit["label"].to_numpy() if fit["label"].null_count() == 0 else None
    return AuditDraw(data, X[np.array([X_of[p] for p in test["pair_id"].to_list()])], test["label"].to_numpy().astype(float),
                     test["rating"].to_numpy(), test["group_id"].to_list(), label, p_true, test["comparison_id"].to_list())


def run_draw(draw: AuditDraw, base_fit, rho, seed: int, args) -> tuple[list[dict], dict]:
    from stages.fit.core import audit_risk, audit_rows, fit_method, fit_nuisance
    from stages.fit.methods import get_method

    data = draw.data
    fp = dataclasses.replace(
        base_fit, noise=dataclasses.replace(base_fit.noise, rho_pos=rho[0], rho_neg=rho[1]),
        propensity=dataclasses.replace(base_fit.propensity, seed=seed),
        head=dataclasses.replace(base_fit.head, seed=seed, max_epochs=args.max_epochs, patience=args.patience, threads=1))
    emb = dataclasses.replace(fp, propensity=dataclasses.replace(fp.propensity, model="logistic"))
    aud = dataclasses.replace(fp, propensity=dataclasses.replace(fp.propensity, model="audit"))
    select = dataclasses.replace(aud, audit=dataclasses.replace(aud.audit, select=True))
    calib = dataclasses.replace(aud, audit=dataclasses.replace(aud.audit, calibrate=True))
    m = {n: get_method(n) for n in ("naive", "causalrm", "causalrm_dr", "audit_only", "logs_plus_audit")}
    if args.estimated_only:
        return estimated_fits(data, aud, m, draw), {}
    n_emb = fit_nuisance(data, emb, [m["naive"], m["causalrm"]])
    n_aud = fit_nuisance(data, aud, [m["causalrm"], m["causalrm_dr"], m["audit_only"]])
    fits, heads = [], {}

    def fit(label, method, nuis, params, rates="true", on=None):
        t0 = time.perf_counter()
        model, res = fit_method(on or data, nuis, method, params)
        heads[label] = (model, nuis)
        fits.append({"method": label, "rates": rates, **score(draw, model), "best_epoch": res.best_epoch,
                     "seconds": time.perf_counter() - t0})

    fit("naive", m["naive"], n_emb, emb)
    fit("causalrm_emb", m["causalrm"], n_emb, emb)
    fit("causalrm_audit", m["causalrm"], n_aud, aud)
    fit("causalrm_dr_audit", m["causalrm_dr"], n_aud, aud)
    fit("audit_only", m["audit_only"], n_aud, aud)
    fit("logs_plus_audit", m["logs_plus_audit"], n_aud, aud)
    fit("causalrm_audit+select", m["causalrm"], n_aud, select)
    fit("causalrm_audit+calib", m["causalrm"], n_aud, calib)
    fit("naive+calib", m["naive"], dataclasses.replace(n_emb, rates=n_aud.rates), dataclasses.replace(
        emb, audit=dataclasses.replace(emb.audit, calibrate=True)))
    if args.calibration_only:
        return fits[-2:], {}
    audited = audit_rows(data, n_aud, fp.audit.labels)
    risks = {k: audit_risk(heads[k][0], data.X, audited) for k in CHOICE}
    chosen = min(risks, key=risks.get)
    fits.append({**next(f for f in fits if f["method"] == chosen), "method": "audit_choice", "chose": chosen})
    if args.estimated and rho != (0.0, 0.0):
        fits += estimated_fits(data, aud, m, draw)
    if draw.propensity_true is not None:
        true_p = np.clip(draw.propensity_true, fp.propensity.clip_min, 1.0)
        fit("causalrm_true_p", m["causalrm"], dataclasses.replace(n_emb, propensity=np.where(data.audit, 1.0, true_p)
                                                                  if data.audit is not None else true_p), emb)
    if draw.label is not None:
        from stages.fit.core import FitInputs

        clean = FitInputs(data.X, data.split, np.ones(len(data.X), bool), draw.label, where="bench:oracle")
        fit("oracle", m["naive"], fit_nuisance(clean, fp, [m["naive"]]), fp, "clean labels", on=clean)
    diag = {"audit_rows": int(data.audit.sum()) if data.audit is not None else 0,
            "audit_train": int((data.audit & data.train).sum()) if data.audit is not None else 0,
            "observed_logs_train": int((data.observed & data.logs & data.train).sum()),
            "rows_train": int(data.train.sum()), "val_audit_risk": risks, "audit_choice": chosen,
            "label_selection": n_aud.diagnostics.get("label_selection"),
            "prop_auc_embedding": n_emb.diagnostics.get("propensity", {}).get("auc")}
    a = n_aud.diagnostics.get("audit_propensity")
    if a:
        diag["audit_global"] = {k: a["global"][k] for k in ("pi1", "pi0", "p_y1_observed", "p_y1_audit")}
        diag["k"] = a["k"]
        if draw.propensity_true is not None and draw.label is not None:
            diag["pi_truth"] = pi_truth(n_aud, data, draw)
    return fits, diag


def estimated_fits(data, aud, m, draw) -> list[dict]:
    """The audit heads again with anchor-estimated noise rates (fit.noise's own estimate, from
    the logs' feedback model), rates marked "estimated"."""
    from stages.fit.core import fit_method, fit_nuisance

    est = dataclasses.replace(aud, noise=dataclasses.replace(aud.noise, rho_pos=None, rho_neg=None))
    try:
        nuis = fit_nuisance(data, est, [m["causalrm"], m["audit_only"]])
    except RmpipeError as exc:  # the anchors collapsed (d ≤ 0)
        return [{"method": "causalrm_audit", "rates": "estimated", "error": str(exc)}]
    out = []
    for label, method in (("causalrm_audit", m["causalrm"]), ("audit_only", m["audit_only"])):
        model, res = fit_method(data, nuis, method, est)
        out.append({"method": label, "rates": "estimated", **score(draw, model), "best_epoch": res.best_epoch,
                    "rho_pos_hat": nuis.rates.rho_pos, "rho_neg_hat": nuis.rates.rho_neg})
    return out


def pi_truth(nuisance, data, draw) -> dict:
    """π̂(s, y) beside the truth (mean true propensity of the non-audit train rows of class y in
    stratum s): mean absolute error over strata, and the global values."""
    model = nuisance.audit_model
    Z = nuisance.features.transform(data.X, data.columns) if nuisance.features is not None else data.X
    s = model.assign(Z, data.columns)
    rows = data.train & data.logs
    err1, err0 = [], []
    for j in range(model.n_strata_):
        for y, err, est in ((1, err1, model.pi1_), (0, err0, model.pi0_)):
            m = rows & (s == j) & (draw.label == y)
            if m.sum() >= 20:
                err.append(abs(est[j] - draw.propensity_true[m].mean()))
    g1 = float(draw.propensity_true[rows & (draw.label == 1)].mean())
    g0 = float(draw.propensity_true[rows & (draw.label == 0)].mean())
    return {"pi1_true": g1, "pi0_true": g0, "mae_pi1": float(np.mean(err1)) if err1 else None,
            "mae_pi0": float(np.mean(err0)) if err0 else None}


def load_embeddings(params: Params, datasets, columns) -> tuple[dict, np.ndarray]:
    """Embed what the store lacks (once), then read every pair of every data set at seed 0."""
    import polars as pl

    from pipeline.store import EmbeddingStore
    from stages.embed.run import embed
    from stages.prepare.run import build

    frames = [build(draw_params(params, d, 0.01, RHOS[0], 0, columns), where=f"bench:{d}")[0] for d in datasets]
    frames += [build(draw_params(params, "coat", 0.25, (0, 0), s, columns))[0] for s in range(1, 5) if "coat" in datasets]
    pairs = pl.concat([f.select("pair_id", "prompt", "response") for f in frames]).unique(
        subset="pair_id", keep="first", maintain_order=True)
    print(embed(params, args_backbone, table=pairs, progress=True).line(), flush=True)
    ids = pairs["pair_id"].to_list()
    return {p: i for i, p in enumerate(ids)}, EmbeddingStore(params.store_path(args_backbone)).read(ids)


args_backbone = "minilm"


def plan(args) -> list[dict]:
    jobs = []
    for d in args.datasets:
        if d == "coat":
            for share in args.coat_shares:
                for seed in range(args.seeds):
                    jobs.append(dict(dataset=d, share=share, rho=[0.0, 0.0], seed=seed))
            continue
        for share in args.shares:
            for rho in (RHOS[1:] if args.second_rho_only else RHOS[:args.rhos]):
                for seed in range(args.seeds):
                    jobs.append(dict(dataset=d, share=share, rho=list(rho), seed=seed))
    return jobs


def key(job) -> str:
    return json.dumps(job, sort_keys=True)


def main(argv=None) -> int:
    global args_backbone
    import torch
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=[*SIMULATED, "coat"], help="default, shared sets, coat")
    ap.add_argument("--data", action="append", default=[], metavar="file:PATH",
                    help="your own file: rated (simulated, as the shared sets) or logged with an audit column")
    ap.add_argument("--column", action="append", default=[], metavar="CONTRACT=YOURS")
    ap.add_argument("--shares", nargs="+", type=float, default=[0.005, 0.01, 0.02, 0.05])
    ap.add_argument("--coat-shares", nargs="+", type=float, default=[0.25, 1.0],
                    help="share of each Coat shopper's 16 random ratings in the audit")
    ap.add_argument("--rhos", type=int, default=2, help="noise settings: 1 = (0.1, 0.2) only, 2 = both")
    ap.add_argument("--second-rho-only", action="store_true", help="noise setting (0.2, 0.1) alone")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--estimated", action="store_true", help="also fit the audit heads with anchor-estimated rates")
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "audit")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--calibration-only", action="store_true",
                    help="refit only the calibrated variants of the draws in <out>/records.jsonl, in place")
    ap.add_argument("--estimated-only", action="store_true",
                    help="add the estimated-rate audit heads to the draws in <out>/records.jsonl, in place")
    args = ap.parse_args(argv)
    args.datasets = [*args.datasets, *args.data]
    columns = dict(c.split("=", 1) for c in args.column)
    args_backbone = args.backbone
    args.out.mkdir(parents=True, exist_ok=True)
    records_path = args.out / "records.jsonl"
    from bench import audit_report

    if args.report_only:
        records = [json.loads(line) for line in records_path.read_text().splitlines()]
        print(audit_report.write(records, args.out))
        return 0
    params = load_params(args.params)
    done = {}
    if args.calibration_only or args.estimated_only:
        return redo_calibration(args, params, columns, records_path)
    if args.resume and records_path.exists():
        done = {key(r["job"]): r for r in map(json.loads, records_path.read_text().splitlines())}
    elif records_path.exists():
        records_path.unlink()
    jobs = plan(args)
    print(f"audit_protocol: {len(jobs)} draws ({len(done)} reused) -> {args.out}", flush=True)
    X_of, X = load_embeddings(params, list(dict.fromkeys(j["dataset"] for j in jobs)), columns)
    torch.set_num_threads(1)
    threadpool_limits(1)
    records, t_start = [], time.perf_counter()
    for i, job in enumerate(jobs, 1):
        if key(job) in done:
            records.append(done[key(job)])
            continue
        t0 = time.perf_counter()
        try:
            p = draw_params(params, job["dataset"], job["share"], tuple(job["rho"]), job["seed"], columns)
            draw = make_draw(p, X_of, X)
            fits, diag = run_draw(draw, params.fit, tuple(job["rho"]), job["seed"], args)
        except RmpipeError as exc:
            fits, diag = [], {"error": str(exc)}
        rec = {"job": job, "fits": fits, "diag": diag, "seconds": time.perf_counter() - t0}
        records.append(rec)
        with open(records_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        r2 = " ".join(f"{f['method']} {f['r2']:+.3f}" for f in fits if f["rates"] != "estimated" and f.get("r2") is not None)
        print(f"[{i}/{len(jobs)}] {job}: {r2 or diag.get('error')} ({rec['seconds']:.0f} s, "
              f"{(time.perf_counter() - t_start) / 60:.1f} min)", flush=True)
    print(audit_report.write(records, args.out))
    return 0


def redo_calibration(args, params, columns, records_path: Path) -> int:
    """The calibrated variants again (same seeds, so the same heads under them), for records made
    before a change to the calibration, or the estimated-rate heads added; the rest of each
    record is kept."""
    import torch
    from threadpoolctl import threadpool_limits

    from bench import audit_report

    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    X_of, X = load_embeddings(params, list(dict.fromkeys(r["job"]["dataset"] for r in records)), columns)
    torch.set_num_threads(1)
    threadpool_limits(1)
    for i, rec in enumerate(records, 1):
        job = rec["job"]
        if not rec["fits"]:
            continue
        draw = make_draw(draw_params(params, job["dataset"], job["share"], tuple(job["rho"]), job["seed"], columns), X_of, X)
        fresh, _ = run_draw(draw, params.fit, tuple(job["rho"]), job["seed"], args)
        if args.estimated_only:
            rec["fits"] = [f for f in rec["fits"] if f["rates"] != "estimated"] + fresh
            by = {f["method"]: f for f in fresh if "r2" in f}
        else:
            by = {f["method"]: f for f in fresh}
            rec["fits"] = [by.get(f["method"], f) if f["rates"] == "true" else f for f in rec["fits"]]
        print(f"[{i}/{len(records)}] {job}: " + " ".join(f"{k} {v['r2']:+.3f}" for k, v in by.items()), flush=True)
        records_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(audit_report.write(records, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
