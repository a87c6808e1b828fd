"""Metrics against clean labels (docs/method.md, "Evaluation", "Best-of-N"): the reward ``σ(f)``
compared with the clean label ``y`` — R², MAE, RMSE, MSE (where debiasing shows), AUROC and
Pearson (ranking, which debiasing barely moves) — plus Spearman against a scalar rating, pairwise
accuracy over human comparisons, and best-of-N and NDCG within groups of responses to one prompt,
each only where the table has what it needs."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, ndcg_score, r2_score, roc_auc_score

HEADLINE = ("r2", "mae", "rmse", "auroc", "pearson", "pairwise_accuracy", "spearman",
            "bon_pick", "bon_gap_closed", "ndcg")
BEST_OF_N = ("bon_pick", "bon_random", "bon_best", "bon_gap_closed", "bon_groups")


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
    mse = float(mean_squared_error(y, r))
    out = {"rows": int(len(y)), "positive_rate": float(y.mean()), "reward_mean": float(r.mean()),
           "r2": float(r2_score(y, r)) if np.var(y) > 0 else None,
           "mae": float(mean_absolute_error(y, r)), "rmse": float(np.sqrt(mse)), "mse": mse,
           "auroc": None, "pearson": None}
    if 0 < y.sum() < len(y):
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


def rated_groups(group_ids, ratings, rewards) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(ratings, rewards)]`` per group with ≥ 2 rows that have a group, a rating and a reward
    (NaN and None are skipped), in order of first appearance."""
    s = np.asarray(ratings, dtype=float)
    r = np.asarray(rewards, dtype=float)
    rows: dict = {}
    for i, g in enumerate(group_ids):
        if g is not None and np.isfinite(s[i]) and np.isfinite(r[i]):
            rows.setdefault(g, []).append(i)
    return [(s[idx], r[idx]) for idx in map(np.asarray, rows.values()) if len(idx) >= 2]


def best_of_n(group_ids, ratings, rewards) -> dict:
    """Best-of-N over groups (docs/method.md, "Best-of-N"): per group the rating of the response with
    the highest reward (tied rewards: their mean rating), the group's mean rating (a random pick)
    and its maximum; their means over groups, and the share of the best − random gap closed as a
    ratio of sums (all-tied groups add nothing). ``bon_groups`` = groups used; with none, or no
    gap to close, the values are ``None``."""
    groups = rated_groups(group_ids, ratings, rewards)
    if not groups:
        return {"bon_pick": None, "bon_random": None, "bon_best": None, "bon_gap_closed": None, "bon_groups": 0}
    pick = np.array([s[r == r.max()].mean() for s, r in groups])
    rand = np.array([s.mean() for s, _ in groups])
    best = np.array([s.max() for s, _ in groups])
    gap = float(np.sum(best - rand))
    return {"bon_pick": float(pick.mean()), "bon_random": float(rand.mean()), "bon_best": float(best.mean()),
            "bon_gap_closed": float(np.sum(pick - rand)) / gap if gap > 0 else None, "bon_groups": len(groups)}


def ndcg(group_ids, ratings, rewards) -> float | None:
    """Mean NDCG@N over best-of-N's groups, each ranked by reward (tied rewards share their gains:
    scikit-learn's averaging). Gain = rating rescaled to [0, 1] by the lowest and highest rating in
    those groups; groups whose ratings all tie are left out (every order is ideal, NDCG says
    nothing). ``None`` when no group is left."""
    groups = rated_groups(group_ids, ratings, rewards)
    if not groups:
        return None
    lo = min(s.min() for s, _ in groups)
    hi = max(s.max() for s, _ in groups)
    scores = [ndcg_score([(s - lo) / (hi - lo)], [r]) for s, r in groups if s.max() > s.min()]
    return float(np.mean(scores)) if scores else None


def realised_noise(label: np.ndarray, feedback: np.ndarray, observed: np.ndarray) -> dict:
    """Flip rates among observed rows, from the clean labels: the truth beside a fit's estimates."""
    m = np.asarray(observed, dtype=bool) & ~np.isnan(np.asarray(label, dtype=float))
    y, fb = np.asarray(label)[m].astype(int), np.asarray(feedback)[m].astype(int)
    pos, neg = y == 1, y == 0
    return {"rho_pos": float(np.mean(fb[pos] == 0)) if pos.any() else None,
            "rho_neg": float(np.mean(fb[neg] == 1)) if neg.any() else None,
            "rows": int(m.sum())}
