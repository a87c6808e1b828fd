"""Propensity: cross-fitting, clipping, logged propensities, diagnostics, both model kinds."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import RmpipeError
from pipeline.nuisance import CrossFitClassifier, Features
from stages.fit.propensity import (PropensityModel, calibration_bins, diagnostics, effective_sample_size,
                                   expected_calibration_error, logged_propensity)


def observed_world(n=3000, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    p = 1 / (1 + np.exp(-(1.5 * X[:, 0] - 1.5)))
    return X, p, rng.random(n) < p


@pytest.mark.parametrize("kind", ["logistic", "lightgbm"])
def test_cross_fitted_propensity_is_out_of_fold_and_recovers_the_truth(kind):
    X, p, o = observed_world()
    rows = np.arange(2000)
    model = PropensityModel(kind, folds=3, clip_min=0.05).fit(X, o, rows)
    assert model.oof_.shape == (2000,) and len(model.classifier_.models_) == 3
    held_out = model.predict_raw(X[2000:])
    tolerance = 0.05 if kind == "logistic" else 0.08
    assert np.mean(np.abs(held_out - p[2000:])) < tolerance
    assert model.predict(X).min() >= 0.05
    # out-of-fold: a row's score does not come from a model that saw it, so it differs from the
    # in-sample fold average
    assert not np.allclose(model.oof_, model.predict_raw(X[rows]))


def test_oof_scores_equal_refits_without_the_row():
    X, _, o = observed_world(n=600)
    cf = CrossFitClassifier("logistic", folds=3, seed=1).fit(X, o)
    from sklearn.model_selection import StratifiedKFold

    for k, (fit_idx, out_idx) in enumerate(StratifiedKFold(3, shuffle=True, random_state=1).split(X, o)):
        from pipeline.nuisance import LogisticClassifier

        refit = LogisticClassifier(seed=1 + k).fit(X[fit_idx], o[fit_idx])
        assert np.allclose(cf.oof_[out_idx], refit.predict_proba(X[out_idx]))


def test_diagnostics_report_auc_brier_calibration_clipping_and_ess():
    X, p, o = observed_world()
    d = diagnostics(p, o, 0.1, "truth")
    assert d["auc"] > 0.7 and d["brier"] < 0.25 and d["ece"] < 0.05
    assert d["share_clipped"] == pytest.approx(np.mean(p < 0.1))
    w = o / np.clip(p, 0.1, 1)
    assert d["ess"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    assert effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert expected_calibration_error(np.full(100, 0.3), np.r_[np.ones(30), np.zeros(70)]) == pytest.approx(0)


def test_logged_propensities_are_used_as_given_but_clipped():
    assert logged_propensity(np.array([0.01, 0.5, 1.0]), 0.1).tolist() == [0.1, 0.5, 1.0]
    with pytest.raises(RmpipeError, match="lack a logged propensity"):
        logged_propensity(np.array([0.5, np.nan]), 0.1)


def test_features_project_with_pca_and_add_covariates():
    X, _, _ = observed_world(n=500, dim=20)
    cols = {"surface": np.array(["web", "app"] * 250, dtype=object), "position": np.arange(500) % 3}
    feats = Features(pca_dim=4, covariates=("surface", "position")).fit(X, cols, np.arange(400))
    Z = feats.transform(X, cols)
    assert Z.shape == (500, 4 + 2 + 1)
    assert feats.categories_ == {"surface": ["app", "web"]}
    assert Features().fit(X, {}, np.arange(500)).transform(X, {}) is X  # nothing to add: no copy


def test_logistic_c_none_picks_the_grid_value_with_the_best_out_of_fold_log_loss():
    from pipeline.nuisance import C_GRID, LogisticClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 30)).astype(np.float32)
    noise_only = LogisticClassifier(c=None).fit(X, rng.integers(0, 2, 400))
    signal = LogisticClassifier(c=None).fit(X, (X[:, 0] + 0.3 * rng.standard_normal(400) > 0).astype(int))
    assert noise_only.c_ == min(C_GRID) and signal.c_ > min(C_GRID)
    assert LogisticClassifier.from_arrays(signal.to_arrays()).c_ == signal.c_


def test_calibration_bins_and_ece_share_one_binning_by_hand():
    # 10 rows at p = .2 (5 observed) and 10 at p = .6 (6 observed): two quantile bins
    p = np.r_[np.full(10, 0.2), np.full(10, 0.6)]
    o = np.r_[np.ones(5), np.zeros(5), np.ones(6), np.zeros(4)]
    bins = calibration_bins(p, o)
    assert [(b["p_mean"], b["observed_rate"], b["rows"]) for b in bins] == \
        [pytest.approx((0.2, 0.5, 10)), pytest.approx((0.6, 0.6, 10))]
    assert expected_calibration_error(p, o) == pytest.approx((10 * 0.3 + 10 * 0.0) / 20)
    assert diagnostics(p, o, 0.1, "hand")["ece"] == pytest.approx(0.15)
