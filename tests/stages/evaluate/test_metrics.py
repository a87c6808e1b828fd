"""Metrics against clean labels, ratings, comparisons and groups (best-of-N, NDCG)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import root_mean_squared_error

from stages.evaluate.metrics import best_of_n, label_metrics, ndcg, pairwise_accuracy, realised_noise, spearman


def test_label_metrics_match_their_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    r = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    m = label_metrics(y, r)
    sse = sum((a - b) ** 2 for a, b in zip(r, y))
    assert m["mse"] == pytest.approx(sse / 300) and m["rmse"] == pytest.approx(math.sqrt(sse / 300))
    assert m["r2"] == pytest.approx(1 - sse / np.sum((y - y.mean()) ** 2))
    assert m["mae"] == pytest.approx(sum(abs(a - b) for a, b in zip(r, y)) / 300)
    pos, neg = r[y == 1], r[y == 0]  # AUROC = P(a positive outranks a negative), ties half
    assert m["auroc"] == pytest.approx(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))
    assert m["pearson"] == pytest.approx(np.cov(y, r)[0, 1] / (np.std(y, ddof=1) * np.std(r, ddof=1)))


def test_rmse_and_mse_on_a_table_worked_by_hand():
    # errors 0.5, 0.5, 0, 0: MSE 0.5 / 4 = 0.125, RMSE √0.125 = 0.353553..., MAE 0.25
    y, r = np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 1.0, 0.0])
    m = label_metrics(y, r)
    assert m["mse"] == pytest.approx(0.125) and m["mae"] == pytest.approx(0.25)
    assert m["rmse"] == pytest.approx(0.3535533906) == root_mean_squared_error(y, r)


def test_metrics_that_the_rows_cannot_support_are_none():
    m = label_metrics(np.ones(5), np.full(5, 0.8))
    assert m["auroc"] is None and m["pearson"] is None and m["r2"] is None and m["mae"] == pytest.approx(0.2)
    assert label_metrics(np.array([]), np.array([])) == {}
    assert spearman(np.ones(4), np.arange(4.0)) is None


def test_pairwise_accuracy_counts_comparisons_with_a_winner_and_halves_ties():
    cid = ["a", "a", "b", "b", "c", "c", "d", None]
    target = np.array([1, 0, 0, 1, 1, 1, 1, 0])
    reward = np.array([0.9, 0.1, 0.5, 0.5, 0.3, 0.2, 0.4, 0.6])
    out = pairwise_accuracy(cid, target, reward)
    assert out == {"pairwise_accuracy": pytest.approx(0.75), "pairs": 2}


def test_realised_noise_counts_flips_among_observed_rows():
    label = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1])
    feedback = np.array([1, 1, 1, 0, 0, 0, 1, 1, 0])
    observed = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    assert realised_noise(label, feedback, observed) == {"rho_pos": 0.25, "rho_neg": 0.5, "rows": 8}


# Groups by hand, rows in no particular order:
#   A: ratings 3, 9, 5 with rewards .2, .1, .8 -> pick 5, random 17/3, best 9
#   B: ratings 2, 8, 4, 6 with rewards .5, .5, .1, .3 -> tied top: pick mean(2, 8) = 5, random 5, best 8
#   C: ratings 7, 7 (all tie) -> pick = random = best = 7; adds nothing to the gap, left out of NDCG
#   D: one response; E: one rated response beside an unrated one; a row with no group: all left out
GROUPS = ["B", "A", "C", "B", "D", "A", "E", "B", "C", None, "A", "E", "B"]
RATINGS = np.array([2, 3, 7, 8, 10, 9, 1, 4, 7, 1, 5, np.nan, 6], dtype=float)
REWARDS = np.array([.5, .2, .4, .5, .9, .1, .3, .1, .6, .7, .8, .9, .3])


def test_best_of_n_by_hand_with_ties_and_all_equal_groups():
    out = best_of_n(GROUPS, RATINGS, REWARDS)
    assert out["bon_groups"] == 3
    assert out["bon_pick"] == pytest.approx((5 + 5 + 7) / 3)
    assert out["bon_random"] == pytest.approx((17 / 3 + 5 + 7) / 3)
    assert out["bon_best"] == pytest.approx((9 + 8 + 7) / 3)
    assert out["bon_gap_closed"] == pytest.approx((5 - 17 / 3) / ((9 - 17 / 3) + (8 - 5)))  # = -2/19


def test_best_of_n_of_a_perfect_ranking_closes_the_whole_gap():
    out = best_of_n(GROUPS, RATINGS, np.nan_to_num(RATINGS))  # reward = the rating itself
    assert out["bon_pick"] == pytest.approx(out["bon_best"]) and out["bon_gap_closed"] == pytest.approx(1.0)
    assert ndcg(GROUPS, RATINGS, np.nan_to_num(RATINGS)) == pytest.approx(1.0)


def test_ndcg_by_hand_with_gains_rescaled_over_the_groups_used():
    g = lambda s: (s - 2) / 7  # lowest rating in groups A-C is 2, highest 9
    d = lambda k: 1 / math.log2(k + 1)
    a = (g(5) * d(1) + g(3) * d(2) + g(9) * d(3)) / (g(9) * d(1) + g(5) * d(2) + g(3) * d(3))
    tied = (g(2) + g(8)) / 2  # B's two top rewards tie: they share their gains over ranks 1-2
    b = (tied * (d(1) + d(2)) + g(6) * d(3) + g(4) * d(4)) / (g(8) * d(1) + g(6) * d(2) + g(4) * d(3) + g(2) * d(4))
    assert ndcg(GROUPS, RATINGS, REWARDS) == pytest.approx((a + b) / 2)


def test_ranking_metrics_without_a_usable_group_are_none():
    out = best_of_n(["a", "b", None], np.array([1.0, 2.0, 3.0]), np.array([.1, .2, .3]))
    assert out == {"bon_pick": None, "bon_random": None, "bon_best": None, "bon_gap_closed": None, "bon_groups": 0}
    assert ndcg(["a", "b", None], np.array([1.0, 2.0, 3.0]), np.array([.1, .2, .3])) is None
    tied = best_of_n(["a", "a"], np.array([4.0, 4.0]), np.array([.1, .2]))
    assert tied["bon_groups"] == 1 and tied["bon_pick"] == 4.0 and tied["bon_gap_closed"] is None
    assert ndcg(["a", "a"], np.array([4.0, 4.0]), np.array([.1, .2])) is None
