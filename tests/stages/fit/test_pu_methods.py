"""Implicit-feedback methods: each risk is unbiased for the clean risk where its assumption holds
(on synthetic populations whose truth is known), naive is not, and the nuisance estimators
recover c and π where Elkan & Noto's estimator is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import FitParams, PUParams, PropensityParams
from pipeline.errors import RmpipeError
from stages.fit.core import FitInputs, fit_nuisance, method_guard, method_rows
from stages.fit.losses import bce_neg, bce_pos
from stages.fit.methods import METHODS, RowInputs, get_method, methods_for

IMPLICIT = methods_for("implicit")


def population(n=400_000, seed=0, e_of_x=None, misclick=0.0, split_share=0.5):
    """Logits f, clean labels y, labelling propensity e(x), actions a = y·Bern(e) (+ mis-clicks)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)
    e = np.full(n, 0.4) if e_of_x is None else e_of_x(x)
    a = np.where(y == 1, rng.random(n) < e, rng.random(n) < misclick).astype(int)
    split = np.where(rng.random(n) < split_share, "train", "val")
    f = torch.tensor(0.8 * x - 0.3, dtype=torch.float64)
    return f, y, e, a, split


def clean_risk(f, y):
    return float((torch.tensor(y) * bce_pos(f) + torch.tensor(1 - y) * bce_neg(f)).mean())


def risk(name, f, rows):
    a1, a0 = METHODS[name].coefficients(rows)
    return float((torch.tensor(a1, dtype=torch.float64) * bce_pos(f)
                  + torch.tensor(a0, dtype=torch.float64) * bce_neg(f)).mean())


def rows_of(a, split, **kw):
    return RowInputs(np.ones(len(a), bool), a, split=split, **kw)


def sar_e(x):
    return 0.1 + 0.8 / (1 + np.exp(-2 * x))  # good responses that look better get acted on more


def test_the_registry_has_every_implicit_method_with_names_apart_from_the_explicit_ones():
    assert IMPLICIT == ["pu_naive", "scar", "upu", "nnpu", "sar", "sar_noise"]
    assert not set(IMPLICIT) & set(methods_for("explicit"))
    assert method_guard(METHODS["upu"], FitParams().guard).nonnegative is False
    assert method_guard(METHODS["nnpu"], FitParams(guard=FitParams().guard.__class__(nonnegative=False)).guard).nonnegative


def test_scar_and_upu_are_unbiased_under_scar_and_naive_is_not():
    f, y, e, a, split = population()
    full = clean_risk(f, y)
    pi = y.mean()
    assert risk("scar", f, rows_of(a, split, c=0.4)) == pytest.approx(full, abs=0.01)
    assert risk("upu", f, rows_of(a, split, prior=pi)) == pytest.approx(full, abs=0.01)
    assert abs(risk("pu_naive", f, rows_of(a, split)) - full) > 0.04  # silence is not a "no"


def test_nnpu_has_upu_coefficients_and_differs_only_by_its_guard():
    _, y, _, a, split = population(n=5000)
    rows = rows_of(a, split, prior=y.mean())
    for got, want in zip(METHODS["nnpu"].coefficients(rows), METHODS["upu"].coefficients(rows)):
        np.testing.assert_array_equal(got, want)
    assert (METHODS["upu"].guard, METHODS["nnpu"].guard) == ("plain", "nonnegative")


def test_upu_uses_each_splits_own_acted_share():
    """The val split's risk (early stopping) is its own estimate, not train's weights."""
    _, y, _, a, _ = population(n=4000)
    split = np.where(np.arange(4000) < 1000, "val", "train")
    a = a.copy()
    a[:1000] = 0
    a[:10] = 1  # val: far fewer acted rows than train
    a1, _ = METHODS["upu"].coefficients(rows_of(a, split, prior=0.5))
    assert a1[0] == pytest.approx(0.5 / 0.01) and a1[np.flatnonzero(a[1000:])[0] + 1000] < 5


def test_sar_is_unbiased_with_a_varying_propensity_and_scar_with_its_mean_is_not():
    f, y, e, a, split = population(e_of_x=sar_e)
    full = clean_risk(f, y)
    assert risk("sar", f, rows_of(a, split, labelling=e)) == pytest.approx(full, abs=0.01)
    c_mean = float(e[y == 1].mean())  # the true labelling frequency: right on average, wrong per row
    assert abs(risk("scar", f, rows_of(a, split, c=c_mean)) - full) > 0.03


@pytest.mark.parametrize("seed", range(3))
def test_sar_noise_coefficients_are_exactly_unbiased_given_the_clean_label(seed):
    """E[a1 | y] = y and E[a0 | y] = 1 − y for every e(x) > rho_neg, as the explicit surrogate."""
    rng = np.random.default_rng(seed)
    e = rng.uniform(0.2, 1.0, 100)
    r = float(rng.uniform(0, 0.19))
    ones, zeros = np.ones(100, int), np.zeros(100, int)
    c1_act, c0_act = METHODS["sar_noise"].coefficients(rows_of(ones, None, labelling=e, misclick=r))
    c1_not, c0_not = METHODS["sar_noise"].coefficients(rows_of(zeros, None, labelling=e, misclick=r))
    c1_act, c0_act, c1_not, c0_not = (np.asarray(v, dtype=np.float64) for v in (c1_act, c0_act, c1_not, c0_not))
    np.testing.assert_allclose(e * c1_act + (1 - e) * c1_not, 1.0, atol=1e-5)  # y = 1
    np.testing.assert_allclose(r * c1_act + (1 - r) * c1_not, 0.0, atol=1e-5)  # y = 0
    np.testing.assert_allclose(e * c0_act + (1 - e) * c0_not, 0.0, atol=1e-5)
    np.testing.assert_allclose(r * c0_act + (1 - r) * c0_not, 1.0, atol=1e-5)


def test_sar_noise_is_unbiased_with_mis_clicks_where_sar_is_not_and_is_sar_without_them():
    f, y, e, a, split = population(e_of_x=sar_e, misclick=0.05)
    full = clean_risk(f, y)
    assert risk("sar_noise", f, rows_of(a, split, labelling=e, misclick=0.05)) == pytest.approx(full, abs=0.01)
    assert abs(risk("sar", f, rows_of(a, split, labelling=e)) - full) > 0.05
    small = rows_of(a[:1000], split[:1000], labelling=e[:1000], misclick=0.0)
    for got, want in zip(METHODS["sar_noise"].coefficients(small), METHODS["sar"].coefficients(small)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_sar_noise_refuses_a_propensity_at_or_below_the_mis_click_rate():
    with pytest.raises(RmpipeError, match=r"2 row\(s\) have a labelling propensity e\(x\) <= the mis-click rate 0.3"):
        METHODS["sar_noise"].coefficients(rows_of(np.ones(3, int), None, labelling=np.array([0.2, 0.3, 0.9]), misclick=0.3))


def test_missing_quantities_are_refused():
    with pytest.raises(ValueError, match="needs a labelling frequency c"):
        METHODS["scar"].coefficients(rows_of(np.ones(3, int), None))
    with pytest.raises(ValueError, match="needs labelling propensities"):
        METHODS["sar"].coefficients(rows_of(np.ones(3, int), None))


# --- the nuisance estimators on separable data (where Elkan & Noto's e1 is exact) ---------
def separable(n=12000, c=0.3, seed=0, logged=None):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    X = (rng.normal(size=(n, 4)) + np.where(y[:, None] == 1, 4.0, -4.0) * np.array([1, 0, 0, 0])).astype(np.float32)
    a = (y == 1) & (rng.random(n) < c)
    split = np.where(rng.random(n) < 0.7, "train", "val")
    data = FitInputs(X, split, np.zeros(n, bool), a.astype(int), propensity_logged=logged, kind="implicit",
                     where="toy")
    return data, y


@pytest.mark.slow
def test_c_and_prior_are_estimated_by_elkan_noto_where_they_are_exact():
    data, y = separable()
    params = FitParams(propensity=PropensityParams(folds=3))
    nuis = fit_nuisance(data, params, [get_method("scar"), get_method("upu")])
    assert nuis.pu.c == pytest.approx(0.3, abs=0.03)
    assert nuis.pu.prior == pytest.approx(y[data.train].mean(), abs=0.04)
    assert nuis.diagnostics["pu"]["c"]["source"].startswith("Elkan & Noto e1")
    given = fit_nuisance(data, FitParams(pu=PUParams(prior=0.4)), [get_method("nnpu")])
    assert given.pu.prior == 0.4 and given.pu.model is None  # nothing to fit when π is known
    train, val = method_rows(data, given, get_method("nnpu"))
    assert train.n == int(data.train.sum()) and len(val.rows) == int(data.val.sum())


def test_sar_without_a_logged_propensity_or_propensity_columns_and_explicit_methods_are_refused_by_name():
    data, _ = separable(n=3000)
    with pytest.raises(RmpipeError, match=r"toy: method sar needs the labelling propensity e\(x\).*a propensity_logged "
                                          r"column, or .* in fit.pu.propensity_columns"):
        fit_nuisance(data, FitParams(), [get_method("sar")])
    with pytest.raises(RmpipeError, match=r"toy: column length \(fit.pu.propensity_columns\) is not in the table"):
        fit_nuisance(data, FitParams(pu=PUParams(propensity_columns=("length",))), [get_method("sar_noise")])
    data.columns["length"] = np.where(np.arange(3000) == 7, np.nan, 1.0)
    with pytest.raises(RmpipeError, match=r"toy: row 7: a missing or non-finite value in fit.pu.propensity_columns"):
        fit_nuisance(data, FitParams(pu=PUParams(propensity_columns=("length",))), [get_method("sar")])
    with pytest.raises(RmpipeError, match=r"fit.pu.propensity_columns must be distinct column names"):
        PUParams(propensity_columns=("length", "length"))
    with pytest.raises(RmpipeError, match=r"method causalrm learns from explicit feedback, but this table holds "
                                          r"implicit feedback.*implicit methods: pu_naive, scar"):
        fit_nuisance(data, FitParams(), [get_method("causalrm")])


def test_an_implicit_fit_input_without_actions_is_refused():
    data, _ = separable(n=3000)
    with pytest.raises(RmpipeError, match="no row in the train split has feedback 1"):
        FitInputs(data.X, data.split, data.observed, np.zeros(3000, int), kind="implicit")
    with pytest.raises(RmpipeError, match="every row in the train split has feedback 1"):
        FitInputs(data.X, data.split, data.observed, np.ones(3000, int), kind="implicit")


# --- SAR-EM: e(x) from the column the labelling depends on ----------------------------------
def labelled_by_a_covariate(n=12000, seed=0, misclick=0.0):
    """Quality from the embedding; the labelling from a logged covariate ``w`` alone (say, the
    response's length, which goes with quality): ``e = σ(−0.5 + 1.2 w)``, ``a = y · Bern(e)``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    logit = 2 * X[:, 0] - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    w = 0.6 * X[:, 0] + 0.8 * rng.normal(size=n)
    e = 1 / (1 + np.exp(-(-0.5 + 1.2 * w)))
    a = np.where(y == 1, rng.random(n) < e, rng.random(n) < misclick).astype(int)
    split = np.where(rng.random(n) < 0.7, "train", "val")
    data = FitInputs(X, split, np.ones(n, bool), a, columns={"w": w}, kind="implicit", where="toy")
    return data, y, e, torch.tensor(0.8 * logit, dtype=torch.float64)


def test_sar_em_recovers_e_from_the_propensity_column_and_sar_with_it_is_unbiased():
    data, y, e, f = labelled_by_a_covariate()
    params = FitParams(propensity=PropensityParams(clip_min=0.01), pu=PUParams(propensity_columns=("w",)))
    nuis = fit_nuisance(data, params, [get_method("sar")])
    e_hat = nuis.pu.labelling
    assert np.abs(e_hat - e)[y == 1].mean() < 0.04
    assert nuis.diagnostics["pu"]["labelling"]["source"].startswith("SAR-EM")
    assert nuis.diagnostics["pu"]["labelling"]["coef"]["w"] == pytest.approx(1.2, abs=0.25)
    full = clean_risk(f, y)
    rows = rows_of(data.feedback, data.split, labelling=e_hat)
    assert risk("sar", f, rows) == pytest.approx(full, abs=0.03)
    c_mean = float(e[y == 1].mean())  # a constant e of the right mean is not: w goes with quality
    assert abs(risk("scar", f, rows_of(data.feedback, data.split, c=c_mean)) - full) > 0.05


def test_a_logged_propensity_wins_unless_use_logged_is_off():
    data, y, e, _ = labelled_by_a_covariate(n=4000)
    data.propensity_logged = np.full(len(e), 0.5)
    pu = PUParams(propensity_columns=("w",))
    logged = fit_nuisance(data, FitParams(pu=pu), [get_method("sar")])
    assert logged.diagnostics["pu"]["labelling"]["source"] == "propensity_logged"
    np.testing.assert_array_equal(logged.pu.labelling, 0.5)
    model = fit_nuisance(data, FitParams(pu=pu, propensity=PropensityParams(use_logged=False)), [get_method("sar")])
    assert model.diagnostics["pu"]["labelling"]["source"].startswith("SAR-EM")
    assert np.corrcoef(model.pu.labelling, e)[0, 1] > 0.95


def test_sar_em_with_mis_clicks_feeds_sar_noise_an_e_it_can_use():
    data, y, e, _ = labelled_by_a_covariate(misclick=0.05, seed=1)
    params = FitParams(propensity=PropensityParams(clip_min=0.1), pu=PUParams(propensity_columns=("w",), rho_neg=0.05))
    nuis = fit_nuisance(data, params, [get_method("sar_noise")])
    assert nuis.diagnostics["pu"]["labelling"]["misclick"] == 0.05
    assert np.abs(nuis.pu.labelling - np.maximum(e, 0.1))[y == 1].mean() < 0.06
