"""The registry: every method's coefficients, and the estimators' unbiasedness on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.fit.losses import bce_neg, bce_pos
from stages.fit.methods import METHODS, RowInputs, get_method, methods_for
from pipeline.errors import RmpipeError


def population(n=400_000, seed=0, rho_pos=0.1, rho_neg=0.2, offset=1.5):
    """Known logits, clean labels, propensities depending on the label, noisy observed labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)
    p = np.where(y == 1, 0.7, 0.08) * (1 + 0.3 * np.tanh(x)) / 1.3 + 0.02
    o = rng.random(n) < p
    flip = np.where(y == 1, rng.random(n) < rho_pos, rng.random(n) < rho_neg)
    fb = np.where(o, np.where(flip, 1 - y, y), 0)
    f = torch.tensor(0.7 * x + offset, dtype=torch.float64)
    return f, y, p, o, fb


def risk(method, f, rows):
    a1, a0 = method.coefficients(rows)
    return float((torch.tensor(a1, dtype=torch.float64) * bce_pos(f) + torch.tensor(a0, dtype=torch.float64) * bce_neg(f)).mean())


@pytest.mark.parametrize("name", methods_for("explicit"))
def test_every_method_gives_finite_coefficients_of_the_right_shape(name):
    f, y, p, o, fb = population(n=1000)
    rows = RowInputs(o, fb, p, np.full(1000, 0.4), 0.1, 0.2)
    a1, a0 = METHODS[name].coefficients(rows)
    assert a1.shape == a0.shape == (1000,) and np.isfinite(a1).all() and np.isfinite(a0).all()
    if not METHODS[name].needs_imputation:
        assert (a1[~o] == 0).all() and (a0[~o] == 0).all()  # only observed rows carry a loss


@pytest.mark.parametrize("name", methods_for("explicit"))
def test_with_no_noise_and_no_selection_every_method_is_plain_cross_entropy(name):
    f, y, _, _, _ = population(n=2000)
    everyone = np.ones(2000, dtype=bool)
    rows = RowInputs(everyone, y, np.ones(2000), np.full(2000, 0.3), 0.0, 0.0)
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(f, torch.tensor(y, dtype=torch.float64)))
    assert risk(METHODS[name], f, rows) == pytest.approx(bce, abs=1e-12)


def test_ips_weighted_risk_matches_the_full_population_risk():
    f, y, p, o, _ = population(rho_pos=0.0, rho_neg=0.0)
    clean = np.where(o, y, 0)
    full = float((torch.tensor(y) * bce_pos(f) + torch.tensor(1 - y) * bce_neg(f)).mean())
    ips = risk(METHODS["ips"], f, RowInputs(o, clean, p))
    naive_obs = risk(METHODS["naive"], f, RowInputs(o, clean)) / o.mean()
    assert ips == pytest.approx(full, abs=0.01)
    assert abs(naive_obs - full) > 0.05  # selection on the label biases the unweighted mean


def test_causalrm_and_causalrm_dr_are_unbiased_for_the_clean_population_risk():
    f, y, p, o, fb = population(offset=-1.0)
    full = float((torch.tensor(y) * bce_pos(f) + torch.tensor(1 - y) * bce_neg(f)).mean())
    wrong_g = np.full(len(y), 0.5)  # DR stays unbiased with a wrong imputation when p is right
    assert risk(METHODS["causalrm"], f, RowInputs(o, fb, p, None, 0.1, 0.2)) == pytest.approx(full, abs=0.015)
    assert risk(METHODS["causalrm_dr"], f, RowInputs(o, fb, p, wrong_g, 0.1, 0.2)) == pytest.approx(full, abs=0.015)
    assert abs(risk(METHODS["ips"], f, RowInputs(o, fb, p)) - full) > 0.05  # noise biases plain IPS


def test_missing_nuisance_and_unknown_method_are_refused():
    with pytest.raises(ValueError, match="needs propensities"):
        METHODS["causalrm"].coefficients(RowInputs(np.ones(3, bool), np.ones(3), rho_pos=0.1, rho_neg=0.1))
    with pytest.raises(RmpipeError, match="unknown method 'ome'"):
        get_method("ome")
