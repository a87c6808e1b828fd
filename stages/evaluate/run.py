"""The evaluate stage's entry point: heads + clean labels -> reports and plots.

The only stage that reads ``label`` (and ``propensity_true``). For each fitted head of
``<backbone>/<dataset>``: metrics on the clean test split, pairwise accuracy and Spearman where
the table allows, the fit's noise-rate estimates beside the realised flip rates, and the
propensity against the truth in simulation. Writes ``reports/<dataset>/<backbone>/<method>.json``
(DVC metrics: that folder holds JSON only) and ``reports/<dataset>/plots/<backbone>/*.png``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from pipeline.atomic import write_json
from pipeline.config import Params
from pipeline.errors import RmpipeError
from pipeline.heads import CARD, head_dir, load_audit_strata, load_head, load_nuisance
from pipeline.store import EmbeddingStore
from pipeline.store_matrix import embeddings
from pipeline.table import read_table
from stages.evaluate import metrics as M
from stages.evaluate import plots


def reports_dir(params: Params, backbone: str) -> Path:
    return Path(params.evaluate.reports_dir) / params.dataset / backbone


def plots_dir(params: Params, backbone: str) -> Path:
    return Path(params.evaluate.reports_dir) / params.dataset / "plots" / backbone


def find_heads(params: Params, backbone: str, methods: Sequence[str] | None) -> dict:
    """Loaded heads of the requested methods (all of fit.methods that exist when none named)."""
    root = Path(params.fit.heads_dir)
    heads = {}
    for name in methods or params.fit.methods:
        folder = head_dir(root, backbone, params.dataset, name)
        if (folder / CARD).exists():
            heads[name] = load_head(folder)
        elif methods:
            raise RmpipeError(f"{folder}: no head for method {name} (run `rmpipe fit --backbone {backbone} "
                              f"--method {name}`)")
    if not heads:
        raise RmpipeError(f"{root / backbone / params.dataset}: no fitted heads (run `rmpipe fit "
                          f"--backbone {backbone} --all`)")
    return heads


def split_metrics(df: pl.DataFrame, reward: np.ndarray) -> dict:
    """Every metric the rows of ``df`` (one split) support, for rewards ``reward``."""
    lab = df["label"].to_numpy()
    has = ~df["label"].is_null().to_numpy()
    out = M.label_metrics(lab[has].astype(float), reward[has])
    rating = df["rating"].to_numpy()
    rated = ~df["rating"].is_null().to_numpy()
    if rated.sum() >= 3:
        out["spearman"] = M.spearman(rating[rated], reward[rated])
    if df["comparison_id"].null_count() < df.height:
        target = np.where(rated, rating, np.where(has, lab.astype(float) if has.any() else 0.0, np.nan))
        out.update(M.pairwise_accuracy(df["comparison_id"].to_list(), target, reward))
    if rated.sum() >= 2:
        groups, ratings = df["group_id"].to_list(), df["rating"].fill_null(np.nan).to_numpy()
        bon = M.best_of_n(groups, ratings, reward)
        if bon["bon_groups"]:
            out.update(bon, ndcg=M.ndcg(groups, ratings, reward))
    return out


def propensity_truth(head, X: np.ndarray, df: pl.DataFrame, bins: int = 10) -> tuple[list[dict], dict] | None:
    """Reload the head's propensity model (no pickle) and compare it with ``propensity_true``."""
    from stages.fit.propensity import truth_bins

    if df["propensity_true"].null_count() == df.height:
        return None
    features, propensity, _ = load_nuisance(head.folder, head.card)
    if propensity is None:
        return None
    columns = {c: df[c].to_numpy() for c in (features.covariates if features else ())}
    Z = features.transform(X, columns) if features else X
    p_hat = propensity.predict(Z)
    true = df["propensity_true"].fill_null(np.nan).to_numpy()
    ok = ~np.isnan(true)
    table = truth_bins(p_hat[ok], true[ok], bins)
    stats = {"mae_vs_true": float(np.mean(np.abs(p_hat[ok] - true[ok]))),
             "pearson_vs_true": float(np.corrcoef(p_hat[ok], true[ok])[0, 1]) if np.std(true[ok]) > 0 else None,
             "note": "mean of the fold models on training rows (in-sample for 1 - 1/K of them)"}
    return table, stats


def audit_strata(head, X: np.ndarray, df: pl.DataFrame) -> np.ndarray | None:
    """Each row's audit stratum as the fit assigned it, from the head's saved strata (None when
    the head has none)."""
    from stages.fit.audit import AuditPropensity

    saved = load_audit_strata(head.folder, head.card)
    if saved is None:
        return None
    features, _, _ = load_nuisance(head.folder, head.card)
    columns = {c: df[c].to_numpy() for c in {*saved["covariates"], *(features.covariates if features else ())}}
    return AuditPropensity.restore(saved).assign(features.transform(X, columns) if features else X, columns)


def audit_truth(diag: dict, train: pl.DataFrame, strata: np.ndarray | None = None) -> dict:
    """The audit propensity's π̂(·, y) (global and per stratum) and, in simulation, the truth: the
    mean true propensity of the train rows of class y outside the audit (in stratum s, given
    ``strata``, the train rows' strata; ``true_rows`` counts the rows that truth averages)."""
    out = {"audit_rows_train": diag["audit_rows_train"], "strata": diag["strata"], "k": diag["k"],
           "pi1": diag["global"]["pi1"], "pi0": diag["global"]["pi0"],
           "by_stratum": [{k: t[k] for k in ("stratum", "audit_rows", "log_rows", "pi1", "pi0")}
                          for t in diag["table"]]}
    logs = ~train["audit"].fill_null(False).to_numpy()
    known = train.filter(pl.Series(logs))
    if not logs.any() or known["propensity_true"].null_count() or known["label"].null_count():
        return out
    true, label = train["propensity_true"].fill_null(np.nan).to_numpy(), train["label"].fill_null(-1).to_numpy()

    def mean_true(rows: np.ndarray) -> float | None:
        return float(true[rows].mean()) if rows.any() else None

    for y in (1, 0):
        out[f"pi{y}_true"] = mean_true(logs & (label == y))
    if strata is not None:
        for t in out["by_stratum"]:
            rows = logs & (strata == t["stratum"])
            t.update(pi1_true=mean_true(rows & (label == 1)), pi0_true=mean_true(rows & (label == 0)),
                     true_rows=int(rows.sum()))
    return out


def pu_truth(diag: dict, train: pl.DataFrame) -> dict:
    """Implicit mode: the fit's c, π and mis-click rate beside the train split's truth (where
    clean labels exist): ``c`` = share of good responses acted on, ``π`` = share good."""
    est = {k: diag[k]["value"] for k in ("c", "prior", "misclick") if k in diag}
    real = None
    if train["label"].null_count() == 0 and train.height:
        y, a = train["label"].to_numpy(), train["feedback"].fill_null(0).to_numpy()
        real = {"prior": float(y.mean()), "c": float(a[y == 1].mean()) if (y == 1).any() else None,
                "misclick": float(a[y == 0].mean()) if (y == 0).any() else None}
    return {"estimated": est, "realised": real}


def evaluate(params: Params, backbone: str, methods: Sequence[str] | None = None, *,
             dataset: str | None = None, log=None) -> dict[str, dict]:
    """Evaluate every fitted head of ``backbone`` on ``params.dataset``; return ``{method: report}``."""
    log = log or (lambda line: print(line, file=sys.stderr))
    if dataset:
        params = dataclasses.replace(params, dataset=dataset)
    heads = find_heads(params, backbone, methods)
    df = read_table(params.table_path)
    test = df.filter(pl.col("split") == "test")
    train = df.filter(pl.col("split") == "train")
    if test.height == 0 or test["label"].null_count() == test.height:
        raise RmpipeError(f"{params.table_path}: no test rows with clean labels to evaluate against")
    store = EmbeddingStore(params.store_path(backbone))
    for head in heads.values():
        head.check_store(store)
    X_test = embeddings(store, test["pair_id"], params.fit.stream_gb)  # streamed beyond fit.stream_gb
    X_train = embeddings(store, train["pair_id"], params.fit.stream_gb)
    observed = train["observed"].to_numpy()
    implicit = any(h.card.feedback == "implicit" for h in heads.values())
    if implicit:  # every row is an impression: compare the acted-on rows with the rest instead
        observed = train["feedback"].fill_null(0).to_numpy() == 1
    truth_noise = M.realised_noise(train["label"].fill_null(np.nan).to_numpy(),
                                   train["feedback"].fill_null(0).to_numpy(), observed) \
        if train["label"].null_count() < train.height else None
    # the propensity model is shared by every method of a fit: compare it with the truth once
    with_p = next((h for h in heads.values() if "propensity" in h.card.diagnostics), None)
    truth = propensity_truth(with_p, X_train, train) if with_p is not None else None
    with_a = next((h for h in heads.values()
                   if h.card.uses.propensity and "audit_propensity" in h.card.diagnostics), None)
    strata = audit_strata(with_a, X_train, train) if with_a is not None else None
    out_dir = reports_dir(params, backbone)
    reports, train_rewards = {}, {}
    for name, head in heads.items():
        reward = head.rewards(X_test)
        train_rewards[name] = head.rewards(X_train)
        card = head.card
        report = {
            "dataset": params.dataset, "backbone": backbone, "method": name, "head": str(head.folder),
            "metrics": split_metrics(test, reward),
            "fit": {"val_guarded_risk": card.metrics["val_guarded_risk"], "guard": card.guard["mode"],
                    "runaway": card.runaway["detected"], "best_epoch": card.training["best_epoch"]},
            "reward_mean": {"train_acted" if implicit else "train_observed":
                            float(train_rewards[name][observed].mean()) if observed.any() else None,
                            "train_not_acted" if implicit else "train_unobserved":
                            float(train_rewards[name][~observed].mean()) if (~observed).any() else None},
        }
        if "noise" in card.diagnostics and card.uses.noise_rates:
            est = card.diagnostics["noise"]
            report["noise_rates"] = {"estimated": {k: est[k] for k in ("rho_pos", "rho_neg", "source")},
                                     "realised": truth_noise}
        if "pu" in card.diagnostics:
            report["pu"] = pu_truth(card.diagnostics["pu"], train)
        if truth is not None:
            report["propensity_vs_true"] = truth[1]
        if card.uses.propensity and "propensity_trust" in card.diagnostics:
            report["propensity_trust"] = card.diagnostics["propensity_trust"]
        if card.uses.propensity and "audit_propensity" in card.diagnostics:
            report["audit_propensity"] = audit_truth(card.diagnostics["audit_propensity"], train, strata)
        if "label_selection" in card.diagnostics:
            report["label_selection"] = card.diagnostics["label_selection"]
        reports[name] = report
        write_json(out_dir / f"{name}.json", report)
    fig_dir, title = plots_dir(params, backbone), f"{params.dataset} / {backbone}"
    plots.method_comparison(reports, fig_dir / "methods.png", title)
    plots.reward_distributions(train_rewards, observed, fig_dir / "reward_distributions.png", title)
    if any(r["metrics"].get("bon_groups") for r in reports.values()):
        plots.best_of_n(reports, fig_dir / "best_of_n.png", title)
    if with_p is not None:
        plots.propensity_calibration(with_p.card.diagnostics["propensity"]["calibration"],
                                     fig_dir / "propensity_calibration.png",
                                     truth[0] if truth else None, title)
    log(format_table(reports))
    return reports


def format_table(reports: dict[str, dict]) -> str:
    cols = M.present(reports.values())
    lines = [f"{'method':12s} " + " ".join(f"{c:>9s}" for c in cols)]
    for name, r in reports.items():
        cells = [r["metrics"].get(c) for c in cols]
        lines.append(f"{name:12s} " + " ".join(f"{v:9.4f}" if v is not None else f"{'-':>9s}" for v in cells))
    return "\n".join(lines)
