"""Metrics against clean labels (METHOD.md, "Evaluation"): the reward ``σ(f)`` compared with the
clean label ``y`` — R², MAE, RMSE, MSE (where debiasing shows), AUROC and Pearson (ranking,
which debiasing barely moves) — plus Spearman against a scalar rating and pairwise accuracy over
human comparisons, each only where the table has what it needs."""

from __future__ import annotations

import numpy as np

HEADLINE = ("r2", "mae", "rmse", "auroc", "pearson", "pairwise_accuracy", "spearman")


def present(reports) -> list[str]:
    """The headline metrics that at least one of ``reports`` (each with a ``metrics`` dict) has."""
    reports = list(reports)
    return [c for c in HEADLINE if any(r["metrics"].get(c) is not None for r in reports)]


def label_metrics(y: np.ndarray, reward: np.ndarray) -> dict:
    """R², MAE, RMSE, MSE, AUROC, Pearson of ``reward`` against binary ``y``; ``{}`` if no rows."""
    y = np.asarray(y, dtype=float)
    r = np.asarray(reward, dtype=float)
    if len(y) == 0:
        return {}
    err = r - y
    mse = float(np.mean(err ** 2))
    var = float(np.var(y))
    out = {"rows": int(len(y)), "positive_rate": float(y.mean()), "reward_mean": float(r.mean()),
           "r2": 1.0 - mse / var if var > 0 else None, "mae": float(np.mean(np.abs(err))),
           "rmse": float(np.sqrt(mse)), "mse": mse, "auroc": None, "pearson": None}
    if 0 < y.sum() < len(y):
        from sklearn.metrics import roc_auc_score

        out["auroc"] = float(roc_auc_score(y, r))
        if np.std(r) > 0:
            out["pearson"] = float(np.corrcoef(y, r)[0, 1])
    return out


def spearman(rating: np.ndarray, reward: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    rating, reward = np.asarray(rating, dtype=float), np.asarray(reward, dtype=float)
    if len(rating) < 3 or np.std(rating) == 0 or np.std(reward) == 0:
        return None
    return float(spearmanr(rating, reward).statistic)


def pairwise_accuracy(comparison_id: np.ndarray, target: np.ndarray, reward: np.ndarray) -> dict:
    """Share of comparisons (two rows sharing ``comparison_id``, different ``target``) in which
    the better row gets the higher reward; a tied reward counts one half."""
    order = {}
    for i, cid in enumerate(comparison_id):
        if cid is not None:
            order.setdefault(cid, []).append(i)
    hits, n = 0.0, 0
    for rows in order.values():
        if len(rows) != 2:
            continue
        a, b = rows
        if target[a] == target[b]:
            continue
        better, worse = (a, b) if target[a] > target[b] else (b, a)
        n += 1
        hits += 1.0 if reward[better] > reward[worse] else 0.5 if reward[better] == reward[worse] else 0.0
    return {"pairwise_accuracy": hits / n if n else None, "pairs": n}


def realised_noise(label: np.ndarray, feedback: np.ndarray, observed: np.ndarray) -> dict:
    """Flip rates among observed rows, from the clean labels: the truth beside a fit's estimates."""
    m = np.asarray(observed, dtype=bool) & ~np.isnan(np.asarray(label, dtype=float))
    y, fb = np.asarray(label)[m].astype(int), np.asarray(feedback)[m].astype(int)
    pos, neg = y == 1, y == 0
    return {"rho_pos": float(np.mean(fb[pos] == 0)) if pos.any() else None,
            "rho_neg": float(np.mean(fb[neg] == 1)) if neg.any() else None,
            "rows": int(m.sum())}
