"""Tables of bench/audit_protocol.py's records: per data set × audit share × noise setting, every
head's mean metrics, and the audit heads paired against naive and against ``audit_only`` (95% t
intervals over seeds), the share of the true-propensity gap closed, and the audit's cost."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.paper_report import _ci, _ms, paired

SHOW = ("naive", "causalrm_emb", "causalrm_audit", "causalrm_dr_audit", "audit_only", "logs_plus_audit",
        "causalrm_audit+select", "causalrm_audit+calib", "naive+calib", "audit_choice", "causalrm_true_p", "oracle")
PAIRED = ("causalrm_emb", "causalrm_audit", "causalrm_dr_audit", "logs_plus_audit", "causalrm_audit+select",
          "causalrm_audit+calib", "naive+calib", "audit_choice")
METRICS = (("r2", "R²", 1), ("mae", "MAE", -1), ("auroc", "AUROC", 1), ("bon_pick", "best-of-N pick", 1), ("ndcg", "NDCG", 1))


def index(records):
    """{(dataset, share, rho): {(method, rates): {metric: {seed: value}}}} and the diagnostics."""
    res = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    diags = defaultdict(list)
    for r in records:
        j = r["job"]
        s = (j["dataset"], j["share"], tuple(j["rho"]))
        diags[s].append(r["diag"])
        for f in r["fits"]:
            for m, _, _ in METRICS:
                res[s][(f["method"], f["rates"])][m][j["seed"]] = f.get(m)
    return res, diags


def _mean(d: dict):
    v = [x for x in d.values() if x is not None]
    return float(np.mean(v)) if v else None


def gap_closed(cell, method) -> str:
    """Σ_seeds (R²(m) − R²(naive)) / Σ_seeds (R²(true p) − R²(naive))."""
    t, n, m = (cell.get((k, "true"), {}).get("r2", {}) for k in ("causalrm_true_p", "naive", method))
    seeds = [s for s in n if s in t and s in m]
    den = sum(t[s] - n[s] for s in seeds)
    return f"{sum(m[s] - n[s] for s in seeds) / den:.0%}" if seeds and abs(den) > 1e-9 else "–"


def section(setting, cell, diags) -> list[str]:
    dataset, share, rho = setting
    d0 = [d for d in diags if "error" not in d]
    if not d0:
        return [f"### {dataset}, audit share {share:g}, (ρ+, ρ−) = {rho}", "", f"error: {diags[0].get('error')}", ""]
    audit = np.mean([d["audit_rows"] for d in d0])
    rows = np.mean([d["rows_train"] for d in d0])
    logs = np.mean([d["observed_logs_train"] for d in d0])
    sel = [d["label_selection"] for d in d0 if d.get("label_selection") and d["label_selection"].get("z") is not None]
    what = "of each shopper's random ratings" if dataset == "coat" else "of the non-test rows"
    out = [f"### {dataset}, audit {share:g} {what}, (ρ+, ρ−) = {rho}", "",
           f"{len(d0)} seeds; cost: {audit:.0f} audited rows (train + val) beside {logs:.0f} observed log rows in "
           f"{rows:.0f} train rows; label-selection check flagged {sum(s['flag'] for s in sel)}/{len(sel)} "
           f"(observed {np.mean([s['observed_positive'] for s in sel]):.1%} vs audit "
           f"{np.mean([s['audit_positive'] for s in sel]):.1%} positive)." if sel else "", ""]
    truth = [d["pi_truth"] for d in d0 if d.get("pi_truth")]
    if truth:
        g = [d["audit_global"] for d in d0]
        out += [f"π̂(·,1) {np.mean([x['pi1'] for x in g]):.3f} (truth {np.mean([t['pi1_true'] for t in truth]):.3f}), "
                f"π̂(·,0) {np.mean([x['pi0'] for x in g]):.3f} (truth {np.mean([t['pi0_true'] for t in truth]):.3f}); "
                f"per-stratum MAE {np.nanmean([t['mae_pi1'] or np.nan for t in truth]):.3f} / "
                f"{np.nanmean([t['mae_pi0'] or np.nan for t in truth]):.3f}; {d0[0].get('k')} strata.", ""]
    chose = defaultdict(int)
    for d in d0:
        chose[d["audit_choice"]] += 1
    out += [f"audit_choice picked: {', '.join(f'{k} ×{v}' for k, v in sorted(chose.items()))}.", ""]
    out += ["| head | rates | " + " | ".join(n for _, n, _ in METRICS) + " |", "|---|---|" + "---:|" * len(METRICS)]
    for method in SHOW:
        for rates in ("true", "estimated", "clean labels"):
            v = cell.get((method, rates))
            if v:
                out.append(f"| {method} | {rates} | " + " | ".join(_ms(v[m].values()) for m, _, _ in METRICS) + " |")
    out += ["", "Paired against naive (and the R² gain against audit_only), 95% t intervals; **+**/**−**: the interval excludes 0.", "",
            "| head | ΔR² | −ΔMAE | Δbest-of-N | ΔNDCG | ΔR² vs audit_only | true-p gap closed |", "|---|---|---|---|---|---|---:|"]
    naive, only = cell.get(("naive", "true")), cell.get(("audit_only", "true"))
    for method in PAIRED:
        v = cell.get((method, "true"))
        if not v or not naive:
            continue
        neg = lambda d: {k: -x for k, x in d.items() if x is not None}  # noqa: E731
        out.append(f"| {method} | {_ci(paired(v['r2'], naive['r2']))} | {_ci(paired(neg(v['mae']), neg(naive['mae'])))} | "
                   f"{_ci(paired(v['bon_pick'], naive['bon_pick']))} | {_ci(paired(v['ndcg'], naive['ndcg']))} | "
                   f"{_ci(paired(v['r2'], only['r2'])) if only else '–'} | {gap_closed(cell, method)} |")
    return out + [""]


def summary(res, diags) -> list[str]:
    """One row per setting for the two heads fixed in advance: ``causalrm_audit`` (the method) and
    ``audit_choice`` (the head with the lowest val-audit risk: chosen without a clean label).
    Nothing here is picked by its test score."""
    head = ["| data (ρ+, ρ−) | audit | audited rows | naive R² | audit_only R² | head | ΔR² vs naive | "
            "ΔR² vs audit_only | −ΔMAE vs naive | −ΔMAE vs audit_only | Δbest-of-N vs naive |",
            "|---|---|---:|---:|---:|---|---|---|---|---|---|"]
    neg = lambda d: {k: -x for k, x in d.items() if x is not None}  # noqa: E731
    rows = []
    for setting in sorted(res):
        cell = res[setting]
        naive, only = cell.get(("naive", "true")), cell.get(("audit_only", "true"))
        if not naive or not only:
            continue
        d0 = [d for d in diags[setting] if "error" not in d]
        dataset, share, rho = setting
        for name in ("causalrm_audit", "audit_choice"):
            v = cell.get((name, "true"))
            if not v:
                continue
            rows.append(f"| {dataset} {rho} | {share:g} | {np.mean([d['audit_rows'] for d in d0]):.0f} | "
                        f"{_mean(naive['r2']):.3f} | {_mean(only['r2']):.3f} | {name} | "
                        f"{_ci(paired(v['r2'], naive['r2']))} | {_ci(paired(v['r2'], only['r2']))} | "
                        f"{_ci(paired(neg(v['mae']), neg(naive['mae'])))} | {_ci(paired(neg(v['mae']), neg(only['mae'])))} | "
                        f"{_ci(paired(v['bon_pick'], naive['bon_pick']))} |")
    return head + rows


def write(records, out: Path) -> Path:
    res, diags = index(records)
    lines = ["# What a randomised audit buys", "",
             "Made by `bench/audit_protocol.py` (command in docs/audit.md). Metrics on the clean test split; "
             "R², MAE against the clean 0/1 label, best-of-N and NDCG within a prompt (a shopper for Coat).", "",
             "## Summary", "", *summary(res, diags), "", "## Every setting", ""]
    for setting in sorted(res, key=lambda s: (s[0], s[1], s[2])):
        lines += section(setting, res[setting], diags[setting])
    path = out / "audit_protocol.md"
    path.write_text("\n".join(lines))
    return path
