"""Bad inputs, each one line naming the problem; training never needs the clean label."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.config import FitParams, HeadParams, NoiseParams, PropensityParams
from pipeline.errors import RmpipeError
from stages.fit.core import FitInputs, fit_arrays
from pipeline.reward_head import RewardHead
from stages.fit.methods import METHODS
from pipeline.synthetic import make_world

WORLD = make_world(n=800, dim=6, seed=0)
TV = WORLD.split != "test"
PARAMS = FitParams(head=HeadParams(hidden=(8,), max_epochs=2), propensity=PropensityParams(folds=3))


def fields(**changes) -> dict:
    base = dict(X=WORLD.X[TV].copy(), split=WORLD.split[TV], observed=WORLD.observed[TV].copy(),
                feedback=WORLD.feedback[TV].copy())
    base.update(changes)
    return base


def nan_embeddings():
    X = WORLD.X[TV].copy()
    X[5, 2] = np.nan
    return fields(X=X)


def fit_with(inputs: dict, params: FitParams = PARAMS):
    data = FitInputs(**inputs, ids=[f"pair{i}" for i in range(len(inputs["X"]))])
    return fit_arrays(data, params, [METHODS["causalrm"]])


def with_noise(rho_pos, rho_neg):
    return dataclasses.replace(PARAMS, noise=NoiseParams(rho_pos=rho_pos, rho_neg=rho_neg))


def with_clip(clip_min):
    return dataclasses.replace(PARAMS, propensity=PropensityParams(folds=3, clip_min=clip_min))


CASES = [
    ("no observed rows", lambda: fit_with(fields(observed=np.zeros(TV.sum(), bool))),
     r"no observed rows in the train split"),
    ("a single feedback class", lambda: fit_with(fields(feedback=np.ones(TV.sum(), np.int8))),
     r"every observed feedback in the train split is 1: .*set prepare.feedback: implicit \(positive-unlabelled mode\)"),
    ("NaN embeddings", lambda: fit_with(nan_embeddings()), r"NaN or infinite embedding for pair_id pair5 \(1 row"),
    ("rows of embeddings and table differ", lambda: fit_with(fields(X=WORLD.X[:10])),
     r"dimension mismatch: 10 embeddings but \d+ values of split"),
    ("head dimension differs", lambda: RewardHead(6).logits(np.zeros((3, 7), np.float32)),
     r"embeddings have shape \(3, 7\), the head expects dimension 6"),
    ("rates without signal", lambda: fit_with(fields(), with_noise(0.5, 0.6)),
     r"fit\.noise\.rho_pos \+ rho_neg must be < 1 .*got 0\.5 \+ 0\.6 = 1\.1"),
    ("clip_min 0", lambda: fit_with(fields(), with_clip(0.0)), r"clip_min must be in \(0, 1\], got 0\.0"),
    ("clip_min above 1", lambda: fit_with(fields(), with_clip(1.5)), r"clip_min must be in \(0, 1\], got 1\.5"),
]


@pytest.mark.parametrize("build, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_inputs_are_one_line_errors(build, pattern):
    with pytest.raises(RmpipeError, match=pattern) as info:
        build()
    assert "\n" not in str(info.value)


def test_fit_inputs_have_no_place_for_clean_labels():
    names = {f.name for f in dataclasses.fields(FitInputs)}
    assert not names & {"label", "propensity_true", "rating"}


def test_anchor_estimates_on_embeddings_that_cannot_predict_feedback_are_flagged():
    """Pure-noise embeddings: anchors collapse while d looks healthy; the weak-AUC warning says so."""
    from stages.fit.core import fit_nuisance

    noise_X = np.random.default_rng(1).standard_normal(WORLD.X[TV].shape).astype(np.float32)
    data = FitInputs(**fields(X=noise_X), ids=[f"pair{i}" for i in range(int(TV.sum()))])
    with pytest.warns(UserWarning, match=r"out-of-fold AUC is 0\.\d\d < 0\.6"):
        nuisance = fit_nuisance(data, PARAMS, [METHODS["causalrm"]])
    assert nuisance.diagnostics["feedback_model"]["oof_auc"] < 0.6
    assert "unreliable" in nuisance.diagnostics["noise"]["warning"]


def test_anchor_estimates_on_informative_embeddings_are_not_flagged(recwarn):
    from stages.fit.core import fit_nuisance

    world = make_world(n=4000, dim=6, seed=0)
    tv = world.split != "test"
    data = FitInputs(X=world.X[tv], split=world.split[tv], observed=world.observed[tv],
                     feedback=world.feedback[tv], ids=[f"p{i}" for i in range(int(tv.sum()))])
    nuisance = fit_nuisance(data, PARAMS, [METHODS["causalrm"]])
    assert nuisance.diagnostics["feedback_model"]["oof_auc"] >= 0.6
    assert not any("unreliable" in str(w.message) for w in recwarn)
