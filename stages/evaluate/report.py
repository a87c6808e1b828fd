"""The report a person reads without DVC: every backbone's method table side by side, the
nuisance diagnostics beside them, and one PNG (``reports/<dataset>.md`` + ``reports/<dataset>.png``,
beside the folder of per-backbone results they are built from).

Built only from what ``evaluate`` wrote (``reports/<dataset>/<backbone>/<method>.json``), so it
costs nothing and re-runs whenever any of those change.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.atomic import atomic_path
from pipeline.config import Params
from pipeline.errors import RmpipeError
from stages.evaluate.metrics import present
from stages.evaluate.plots import pyplot, save_png


def collect(params: Params) -> dict[str, dict[str, dict]]:
    """``{backbone: {method: report}}`` for the backbones and methods params name."""
    root = Path(params.evaluate.reports_dir) / params.dataset
    found: dict[str, dict[str, dict]] = {}
    for backbone in params.embed.backbones:
        for method in params.fit.methods:
            path = root / backbone / f"{method}.json"
            if path.exists():
                found.setdefault(backbone, {})[method] = json.loads(path.read_text())
    if not found:
        raise RmpipeError(f"{root}: no evaluation reports (run `rmpipe evaluate` first)")
    return found


TITLES = {"r2": "R2", "mae": "MAE", "bon_pick": "best-of-N pick"}


def _cell(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _trust(report: dict) -> str:
    """The fit's "don't trust the correction" flag, for heads that use the propensity."""
    trust = report.get("propensity_trust")
    return "–" if trust is None else "FLAG" if trust["flag"] else "ok"


def markdown(params: Params, reports: dict[str, dict[str, dict]]) -> str:
    lines = [f"# rmpipe report: {params.dataset}", "",
             "Metrics of each head's reward on the clean, fully observed test split "
             "(R² / MAE / RMSE against clean labels; pairwise accuracy over comparisons; "
             "Spearman against ratings; best-of-N: the mean clean rating of the response each head "
             "ranks first in a prompt's group, the share of the best − random gap it closes, and "
             "NDCG). Heads were trained and early-stopped without clean labels. "
             "\"propensity trust\" is the fit's own flag, computed without clean labels, for the "
             "heads that weight by the propensity.", ""]
    for backbone, by_method in reports.items():
        cols = present(by_method.values())
        lines += [f"## {backbone}", "", "| method | " + " | ".join(cols) + " | guard | best epoch | propensity trust |",
                  "|---|" + "---:|" * len(cols) + "---|---:|---|"]
        for method, r in by_method.items():
            fit = r.get("fit", {})
            guard = fit.get("guard", "–") + (" (runaway)" if fit.get("runaway") else "")
            lines.append(f"| {method} | " + " | ".join(_cell(r["metrics"].get(c)) for c in cols)
                         + f" | {guard} | {fit.get('best_epoch', '–')} | {_trust(r)} |")
        bon = next((r["metrics"] for r in by_method.values() if r["metrics"].get("bon_groups")), None)
        if bon:
            lines += ["", f"Best-of-N over {bon['bon_groups']} test groups: a random pick's mean rating "
                          f"{_cell(bon['bon_random'])}, the best possible {_cell(bon['bon_best'])}."]
        noise = next((r["noise_rates"] for r in by_method.values() if r.get("noise_rates")), None)
        if noise:
            est, real = noise["estimated"], noise.get("realised") or {}
            lines += ["", f"Noise rates used ({est.get('source')}): rho_pos {_cell(est.get('rho_pos'))}, "
                          f"rho_neg {_cell(est.get('rho_neg'))}; realised in the training rows: "
                          f"rho_pos {_cell(real.get('rho_pos'))}, rho_neg {_cell(real.get('rho_neg'))}."]
        pu = next((r["pu"] for r in by_method.values() if r.get("pu")), None)
        if pu:
            est, real = pu["estimated"], pu.get("realised") or {}
            lines += ["", "Implicit feedback, estimated (realised in the training rows): " + "; ".join(
                f"{k} {_cell(v)} ({_cell(real.get(k))})" for k, v in est.items()) + "."]
        prop = next((r["propensity_vs_true"] for r in by_method.values() if r.get("propensity_vs_true")), None)
        if prop:
            lines += ["", f"Propensity vs the simulation's truth: MAE {_cell(prop.get('mae_vs_true'))}, "
                          f"Pearson {_cell(prop.get('pearson_vs_true'))}."]
        trust = next((r["propensity_trust"] for r in by_method.values() if r.get("propensity_trust")), None)
        if trust:
            lines += ["", f"Propensity trust ({'FLAG' if trust['flag'] else 'ok'}): {trust['reason']}."]
        audit = next((r["audit_propensity"] for r in by_method.values() if r.get("audit_propensity")), None)
        if audit:
            true = (f" (truth {_cell(audit['pi1_true'])} / {_cell(audit['pi0_true'])})" if "pi1_true" in audit else "")
            lines += ["", f"Audit propensity ({audit['strata']}, {audit['k']} strata, {audit['audit_rows_train']} train "
                          f"audit rows): π̂(·,1) {_cell(audit['pi1'])}, π̂(·,0) {_cell(audit['pi0'])}{true}.", ""]
            lines += audit_table(audit["by_stratum"])
        check = next((r["label_selection"] for r in by_method.values() if r.get("label_selection")), None)
        if check:
            lines += ["", f"Label-selection check ({'FLAG' if check['flag'] else 'ok'}): {check['reason']}."]
            if check.get("strata"):
                lines += ["", "| stratum | observed rows | audit rows | observed positive | audit positive | z | flag |",
                          "|---|---:|---:|---:|---:|---:|---|"]
                lines += [f"| {t['stratum']} | {t['observed']} | {t['audit_rows']} | {_cell(t['observed_positive'])} | "
                          f"{_cell(t['audit_positive'])} | {_cell(t['z'])} | {'FLAG' if t['flag'] else ''} |"
                          for t in check["strata"]]
        lines += ["", f"Plots: `{params.dataset}/plots/{backbone}/`.", ""]
    lines += [f"![R², MAE (and best-of-N) by method and backbone]({params.dataset}.png)", ""]
    return "\n".join(lines)


def audit_table(by_stratum: list[dict]) -> list[str]:
    """π̂(s, y) per stratum, with the simulation's truth beside it where evaluate had it."""
    truth = any("pi1_true" in t for t in by_stratum)
    cols = [("audit rows", "audit_rows"), ("log rows", "log_rows"), ("π̂(s,1)", "pi1")] \
        + ([("π(s,1) true", "pi1_true")] if truth else []) + [("π̂(s,0)", "pi0")] \
        + ([("π(s,0) true", "pi0_true")] if truth else [])
    lines = ["| stratum | " + " | ".join(c for c, _ in cols) + " |", "|---:|" + "---:|" * len(cols)]
    for t in by_stratum:
        cells = [str(t.get(k, "–")) if k.endswith("rows") else _cell(t.get(k)) for _, k in cols]
        lines.append(f"| {t['stratum']} | " + " | ".join(cells) + " |")
    return lines


def figure(reports: dict[str, dict[str, dict]], path: Path) -> Path:
    """R² and MAE per method (and the best-of-N pick where groups allow), one bar group per backbone."""
    import numpy as np

    plt = pyplot()
    methods = list(dict.fromkeys(m for by in reports.values() for m in by))
    panels = ["r2", "mae"] + (["bon_pick"] if any(r["metrics"].get("bon_groups") for by in reports.values()
                                                  for r in by.values()) else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    width = 0.8 / max(len(reports), 1)
    for ax, metric in zip(axes, panels):
        for k, (backbone, by_method) in enumerate(reports.items()):
            values = [by_method.get(m, {}).get("metrics", {}).get(metric) for m in methods]
            ax.bar(np.arange(len(methods)) + k * width, [np.nan if v is None else v for v in values],
                   width, label=backbone)
        ax.set_xticks(np.arange(len(methods)) + width * (len(reports) - 1) / 2, methods, rotation=30, ha="right")
        ax.set_title(f"{TITLES[metric]} on the clean test split")
        if metric != "bon_pick":  # a rating scale has no meaningful zero
            ax.axhline(0, color="k", lw=0.5)
    axes[0].legend(fontsize=8)
    return save_png(fig, path)


def report(params: Params) -> Path:
    """Write ``reports/<dataset>.md`` and ``reports/<dataset>.png``; return the markdown's path."""
    reports = collect(params)
    root = Path(params.evaluate.reports_dir)
    figure(reports, root / f"{params.dataset}.png")
    target = root / f"{params.dataset}.md"
    with atomic_path(target) as tmp:
        tmp.write_text(markdown(params, reports))
    return target
