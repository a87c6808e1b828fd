"""The training loop: determinism, recovery in a world with known truth, the runaway guard."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.config import FitParams, GuardParams, HeadParams, NoiseParams, PropensityParams
from stages.evaluate.metrics import label_metrics
from stages.fit.core import FitInputs, fit_arrays
from stages.fit.methods import METHODS
from pipeline.synthetic import make_world


def inputs(world) -> FitInputs:
    tv = world.split != "test"
    return FitInputs(world.X[tv], world.split[tv], world.observed[tv], world.feedback[tv])


def test_same_seed_gives_the_same_head():
    world = make_world(n=1500, dim=8, seed=3)
    params = FitParams(head=HeadParams(hidden=(16,), max_epochs=5, batch_size=64, seed=7),
                       propensity=PropensityParams(folds=3), noise=NoiseParams(rho_pos=0.1, rho_neg=0.2))
    heads = [fit_arrays(inputs(world), params, [METHODS["causalrm"]])[1]["causalrm"] for _ in range(2)]
    (m1, r1), (m2, r2) = heads
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    strip = lambda curve: [{k: v for k, v in c.items() if k != "seconds"} for c in curve]  # noqa: E731
    assert strip(r1.curve) == strip(r2.curve)


# Margins measured with these settings (seeds 0-5, anchor rates from the default CV-chosen C):
# causalrm - naive R² 0.12 to 0.60, naive - causalrm MAE 0.059 to 0.23 (AUROC moved -0.013 to
# +0.042: not asserted, docs/method.md).
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_causalrm_beats_naive_on_r2_and_mae_in_a_world_with_known_truth(seed):
    world = make_world(n=5000, dim=16, seed=seed)
    params = FitParams(head=HeadParams(hidden=(64, 32), lr=2e-3, batch_size=128, max_epochs=40, patience=8,
                                       seed=seed), propensity=PropensityParams(folds=3))
    nuisance, heads = fit_arrays(inputs(world), params, [METHODS["naive"], METHODS["causalrm"]])
    test = world.split == "test"
    m = {name: label_metrics(world.label[test], torch.sigmoid(model.logits(world.X[test])).numpy())
         for name, (model, _) in heads.items()}
    assert m["causalrm"]["r2"] - m["naive"]["r2"] > 0.06
    assert m["naive"]["mae"] - m["causalrm"]["mae"] > 0.03
    assert nuisance.rates.source == "anchors"


def test_plain_surrogate_runs_away_and_the_guarded_default_does_not():
    """Over-estimated noise rates (rho_neg 0.65 where the truth is 0.2 — what collapsing anchor
    estimates produce) make the clean-positive part R₁ negative for a constant head, so the plain
    risk has no floor. Measured: plain validation risk down to -4.2 by epoch 30 (below 0 from
    epoch 7); guarded never below 0.37."""
    world = make_world(n=3000, dim=8, seed=0)
    base = FitParams(head=HeadParams(hidden=(64,), lr=3e-3, batch_size=128, max_epochs=20, patience=1000),
                     propensity=PropensityParams(folds=3), noise=NoiseParams(rho_pos=0.1, rho_neg=0.65))
    runs = {}
    for guarded in (False, True):
        params = dataclasses.replace(base, guard=GuardParams(nonnegative=guarded))
        runs[guarded] = fit_arrays(inputs(world), params, [METHODS["causalrm"]])[1]["causalrm"][1]
    plain, guarded = runs[False], runs[True]
    assert plain.runaway["detected"] and plain.guard["mode"] == "plain" and plain.guard["fired_batches"] == 0
    assert plain.runaway["min_val_plain_risk"] < -0.5
    assert plain.curve[-1]["val_plain_risk"] < plain.curve[9]["val_plain_risk"] < 0  # still falling
    assert not guarded.runaway["detected"] and guarded.guard["mode"] == "nonnegative"
    assert guarded.guard["fired_share"] > 0.1
    assert min(c["val_plain_risk"] for c in guarded.curve) > 0.1


@pytest.mark.parametrize("patience, stopped", [(3, "patience"), (1000, "max_epochs")])
def test_early_stopping_returns_the_best_validation_epoch(patience, stopped):
    """lr 0.05 on 1,500 rows overfits after a few epochs (measured: best epoch 6), so patience 3
    stops three epochs after the best; with patience out of reach, all 30 epochs run."""
    world = make_world(n=1500, dim=8, seed=1)
    params = FitParams(head=HeadParams(hidden=(16,), lr=0.05, max_epochs=30, patience=patience, batch_size=64),
                       propensity=PropensityParams(folds=3))
    _, result = fit_arrays(inputs(world), params, [METHODS["naive"]])[1]["naive"]
    risks = [c["val_guarded_risk"] for c in result.curve]
    assert result.best_val_risk == min(risks) == risks[result.best_epoch - 1]
    assert result.stopped == stopped and len(risks) == result.epochs_run
    assert result.epochs_run == (result.best_epoch + patience if stopped == "patience" else 30)
