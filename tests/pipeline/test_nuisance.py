"""The nuisance classifiers on tables whose answer is known: a separable one, one with no signal,
a memorisable one (to catch a fold that sees its own rows), and their array / text round trips."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from pipeline.errors import RmpipeError
from pipeline.nuisance import (C_GRID, CrossFitClassifier, Features, LightGBMClassifier, LogisticClassifier,
                                 make_classifier)


def separable(n=400, dim=5, seed=0):
    """``y = [x₀ > 0]`` with a margin of 0.5 around the boundary."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    X[:, 0] += np.where(X[:, 0] > 0, 0.5, -0.5)
    return X, (X[:, 0] > 0).astype(int)


def no_signal(n=400, dim=5, seed=0, rate=0.3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)).astype(np.float32), (rng.random(n) < rate).astype(int)


@pytest.mark.parametrize("kind", ["logistic", "lightgbm"])
def test_a_separable_table_is_ranked_perfectly_and_one_without_signal_gets_the_base_rate(kind):
    X, y = separable()
    model = make_classifier(kind, c=10.0).fit(X, y)
    p = model.predict_proba(X)
    assert p.shape == (400,) and ((p > 0.5) == y).all() and roc_auc_score(y, p) == 1.0
    X, y = no_signal()
    Xn, yn = no_signal(seed=1)  # new rows: nothing to learn carries over
    model = make_classifier(kind, c=None).fit(X, y)
    p = model.predict_proba(Xn)
    assert abs(p.mean() - y.mean()) < 0.05 and 0.4 < roc_auc_score(yn, p) < 0.6
    if kind == "logistic":  # the C search regularises towards the constant; trees still chase noise
        assert model.c_ <= 0.01 and p.std() < 0.05


def test_logistic_standardises_its_own_copy_unless_told_and_survives_a_constant_column():
    X, y = separable()
    X[:, 3] = 7.0  # zero variance: scale 1, not a division by zero
    before = X.copy()
    model = LogisticClassifier(c=1.0).fit(X, y)
    assert np.array_equal(X, before) and np.isfinite(model.predict_proba(X)).all()
    assert model.scale_[3] == 1.0 and model.mean_[3] == pytest.approx(7.0)
    LogisticClassifier(c=1.0).fit(X, y, copy=False)
    assert np.allclose(X[:, 3], 0.0) and np.allclose(X.std(axis=0)[:3], 1.0, atol=1e-5)


def test_logistic_c_search_picks_the_grid_value_with_the_lowest_cross_validated_log_loss():
    """Checked against an independent search: each C of the grid refitted on the same three
    seeded stratified folds, scored by pooled out-of-fold log loss."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((600, 40)).astype(np.float32)
    y = (X[:, 0] + 0.8 * X[:, 1] + rng.standard_normal(600) > 0.5).astype(int)
    model = LogisticClassifier(c=None, seed=5).fit(X, y)
    Z = (X - model.mean_) / model.scale_
    losses = []
    for c in C_GRID:
        oof = np.empty(len(y))
        for fit_idx, out_idx in StratifiedKFold(3, shuffle=True, random_state=5).split(Z, y):
            lr = LogisticRegression(C=c, max_iter=500).fit(Z[fit_idx], y[fit_idx])
            oof[out_idx] = lr.predict_proba(Z[out_idx])[:, 1]
        losses.append(log_loss(y, oof))
    assert model.c_ == pytest.approx(C_GRID[int(np.argmin(losses))])
    assert min(C_GRID) < model.c_ < max(C_GRID)  # the grid's interior: the search has an optimum
    full = LogisticRegression(C=model.c_, max_iter=500).fit(Z, y).predict_proba(Z)[:, 1]
    assert np.abs(model.predict_proba(X) - full).max() < 1e-3  # refitted on all rows at that C


def test_logistic_c_search_with_too_few_rows_of_a_class_falls_back_to_c_1():
    X, _ = no_signal(n=50)
    y = np.zeros(50, dtype=int)
    y[:2] = 1
    assert LogisticClassifier(c=None).fit(X, y).c_ == 1.0


@pytest.mark.parametrize("kind", ["logistic", "lightgbm"])
def test_cross_fitted_folds_never_see_their_own_rows(kind):
    """Pure noise in 60 dimensions for 150 rows: a model memorises the rows it is fitted on (in-
    sample AUC near 1) but cannot rank a row it has not seen (out-of-fold AUC near 0.5)."""
    X, y = no_signal(n=150, dim=60, seed=2, rate=0.5)
    rows = np.arange(30, 150)  # rows outside the fit exist and are never scored out-of-fold
    cf = CrossFitClassifier(kind, folds=4, c=100.0, seed=0).fit(X, y[rows], rows)
    assert cf.oof_.shape == (120,) and len(cf.models_) == 4
    in_sample = np.mean([m.predict_proba(X[rows]) for m in cf.models_], axis=0)
    assert roc_auc_score(y[rows], in_sample) > 0.9
    assert abs(roc_auc_score(y[rows], cf.oof_) - 0.5) < 0.15
    assert np.allclose(cf.predict(X[:30]), np.mean([m.predict_proba(X[:30]) for m in cf.models_], axis=0))


@pytest.mark.parametrize("kind", ["logistic", "lightgbm"])
def test_export_and_restore_give_identical_scores(kind):
    X, _ = no_signal(n=300)
    y = (X[:, 0] + np.random.default_rng(0).standard_normal(300) > 0).astype(int)
    cf = CrossFitClassifier(kind, folds=3, c=None, seed=4).fit(X, y)
    arrays, texts = cf.export()
    assert (set(texts) == {"fold0", "fold1", "fold2"}) == (kind == "lightgbm") and (not arrays) == (kind == "lightgbm")
    restored = CrossFitClassifier.restore(kind, 3, arrays, texts)
    assert np.array_equal(restored.predict(X), cf.predict(X))
    if kind == "logistic":
        assert [m.c_ for m in restored.models_] == [m.c_ for m in cf.models_]


def test_lightgbm_predicts_nothing_for_no_rows():
    X, y = separable(n=100)
    model = LightGBMClassifier(n_estimators=5).fit(X, y)
    assert model.predict_proba(X[:0]).shape == (0,)


def test_cross_fitting_with_fewer_rows_of_a_class_than_folds_is_one_error():
    X, _ = no_signal(n=40)
    y = np.zeros(40, dtype=int)
    y[:2] = 1
    with pytest.raises(RmpipeError, match="too few rows of one class to cross-fit with 3 folds"):
        CrossFitClassifier(folds=3).fit(X, y)
    with pytest.raises(RmpipeError, match=r"unknown nuisance model 'svm' \(known: logistic, lightgbm\)"):
        make_classifier("svm")


def test_features_learn_categories_from_training_rows_only():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    cols = {"surface": np.array(["web", "app", "web", "app", "tv", "tv"], dtype=object),
            "position": np.array([0, 1, 2, 3, 4, 5])}
    feats = Features(covariates=("surface", "position")).fit(X, cols, np.arange(4))
    Z = feats.transform(X, cols)
    assert feats.categories_ == {"surface": ["app", "web"]}  # "tv" is only in rows outside the fit
    assert Z.dtype == np.float32 and Z[:, :2].tolist() == X.tolist()
    assert Z[:, 2:4].tolist() == [[0, 1], [1, 0], [0, 1], [1, 0], [0, 0], [0, 0]]
    assert Z[:, 4].tolist() == [0, 1, 2, 3, 4, 5]


def test_features_pca_is_fitted_on_training_rows_and_sized_by_them():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 10)).astype(np.float32)
    X[:100, 0] *= 20  # the training rows' first direction dominates
    feats = Features(pca_dim=2, seed=0).fit(X, {}, np.arange(100))
    assert abs(feats.pca_["components"][0, 0]) > 0.99
    assert feats.transform(X, {}).shape == (200, 2) and feats.transform(X[:0], {}).shape == (0, 2)
    with pytest.raises(RmpipeError, match=r"fit\.propensity\.pca_dim must be in 1\.\.5, got 6"):
        Features(pca_dim=6).fit(X, {}, np.arange(5))
