"""The fit's "don't trust the correction" flag: computed without clean labels, it fires where the
selection follows a label the embeddings cannot see, and stays quiet where they can."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from stages.fit.core import FitInputs, fit_nuisance
from stages.fit.methods import get_method
from stages.fit.propensity import BLIND_AUC, FLAT_ESS, PropensityModel, propensity_trust
from pipeline.synthetic import make_world
from tests.stages.fit.conftest import fast_fit

VISIBLE, HIDDEN = 0.5, 100.0  # latent noise: the rating follows the embedding, or all but ignores it


def trust_of(latent_noise, seed=0):
    w = make_world(n=4000, seed=seed, latent_noise=latent_noise)
    rows = np.flatnonzero(w.split == "train")
    model = PropensityModel(folds=5, seed=seed).fit(w.X, w.observed, rows)
    return propensity_trust(w.observed[rows], model.oof_, w.feedback[rows])


@pytest.mark.parametrize("seed", [0, 1])
def test_selection_the_embedding_sees_is_trusted(seed):
    t = trust_of(VISIBLE, seed)
    assert not t["flag"] and t["auc"] > BLIND_AUC and t["ess_ratio"] < FLAT_ESS
    assert t["feedback_balance"] > 0.65  # skewed feedback: the correction has work to do, and can
    assert "sees the selection" in t["reason"]


@pytest.mark.parametrize("seed", [0, 1])
def test_selection_on_a_label_the_embedding_cannot_see_is_flagged(seed):
    t = trust_of(HIDDEN, seed)
    assert t["flag"] and t["auc"] < BLIND_AUC and t["feedback_balance"] > 0.65
    assert "cannot see the selection" in t["reason"]


def test_balanced_feedback_or_no_selection_is_not_flagged():
    rng = np.random.default_rng(0)
    o = rng.random(2000) < 0.3
    blind = rng.uniform(0.28, 0.32, 2000)  # p̂ that knows nothing
    t = propensity_trust(o, blind, (rng.random(2000) < 0.5).astype(int))
    assert not t["flag"] and t["auc"] < BLIND_AUC and "balanced" in t["reason"]
    skewed = np.where(o, (rng.random(2000) < 0.9).astype(int), 0)
    assert propensity_trust(o, blind, skewed)["flag"]
    t = propensity_trust(np.ones(50, bool), np.full(50, 0.9), np.ones(50))
    assert not t["flag"] and t["auc"] is None and "every row is observed" in t["reason"]


def test_fit_warns_and_records_the_flag_in_the_diagnostics():
    def nuisance(latent_noise):
        w = make_world(n=4000, seed=3, latent_noise=latent_noise)
        data = FitInputs(w.X, w.split, w.observed, w.feedback, where="world")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fit_nuisance(data, fast_fit(), [get_method("causalrm")])
        return out.diagnostics["propensity_trust"], [str(c.message) for c in caught]

    trust, messages = nuisance(HIDDEN)
    flagged = [m for m in messages if m.startswith("do not trust the propensity correction")]
    assert trust["flag"] and len(flagged) == 1 and "\n" not in flagged[0]
    assert "stronger backbone" in flagged[0] and "random sample" in flagged[0]
    trust, messages = nuisance(VISIBLE)
    assert not trust["flag"] and not any("do not trust" in m for m in messages)
    assert set(trust) == {"flag", "auc", "ess_ratio", "feedback_balance", "reason"}
