"""Noise rates: anchors recover known rates; impossible and weak rates are refused or warned."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import RmpipeError
from stages.fit.imputation import impute
from stages.fit.noise import NoiseRates, anchor_rates, resolve_rates


def test_anchor_quantiles_recover_rates_from_ideal_scores():
    eta = np.random.default_rng(0).beta(0.3, 0.3, 20000)  # many near-certain rows (anchors)
    scores = 0.2 + (1 - 0.1 - 0.2) * eta  # P(ỹ=1|x) = rho_neg + d · P(y=1|x)
    rates = anchor_rates(scores, q=0.97)
    assert rates.rho_neg == pytest.approx(0.2, abs=0.01) and rates.rho_pos == pytest.approx(0.1, abs=0.01)
    assert rates.source == "anchors"


def test_rates_with_no_signal_are_refused_with_the_estimates():
    # a classifier that learned nothing scores every row at the base rate: d = 0
    with pytest.raises(RmpipeError, match=r"rho_pos=0\.700, rho_neg=0\.300 \(anchors\).*0\.000 <= 0"):
        anchor_rates(np.full(100, 0.3), q=0.97)
    with pytest.raises(RmpipeError, match="<= 0"):
        NoiseRates(0.6, 0.5)


def test_small_d_warns_and_given_rates_win():
    with pytest.warns(UserWarning, match="d = 0.150 < 0.2"):
        rates = resolve_rates(0.4, 0.45, None)
    assert rates.source == "params"


def test_clean_imputation_inverts_the_noise():
    rates = NoiseRates(0.1, 0.2)
    clean = np.array([0.0, 0.3, 1.0])
    noisy = 0.2 + rates.d * clean
    assert impute(noisy, "clean", rates) == pytest.approx(clean)
    assert impute(noisy, "noisy", rates) == pytest.approx(noisy)
    assert impute(np.array([0.05, 0.95]), "clean", rates).tolist() == [0.0, 1.0]
