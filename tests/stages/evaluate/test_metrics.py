"""Metrics against clean labels, ratings and comparisons."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score

from stages.evaluate.metrics import label_metrics, pairwise_accuracy, realised_noise, spearman


def test_label_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    r = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    m = label_metrics(y, r)
    assert m["r2"] == pytest.approx(r2_score(y, r)) and m["mae"] == pytest.approx(mean_absolute_error(y, r))
    assert m["rmse"] == pytest.approx(np.sqrt(m["mse"])) and m["auroc"] == pytest.approx(roc_auc_score(y, r))
    assert m["pearson"] == pytest.approx(np.corrcoef(y, r)[0, 1])


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
