"""pipeline.simulation against docs/method.md's protocol: realised rates within 4 binomial standard
errors on >= 100k rows, the re-scaling when the cap at 1 binds, the propensity's shapes,
thresholds, determinism; the synthetic world draws through the same maths."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import RmpipeError
from pipeline.config import SimulateParams
from pipeline.simulation import SHAPES, Simulator, flips, rescale, scale_to_mean, threshold

N = 120_000


def simulator(**kwargs) -> Simulator:
    return Simulator(SimulateParams(**kwargs))


def within_4se(realised: float, p: float, n: int) -> bool:
    return abs(realised - p) <= 4 * np.sqrt(p * (1 - p) / n)


def check_rates(sim: Simulator, rating: np.ndarray, scale) -> None:
    d = sim.simulate(rating, scale)
    r = d.realised()
    assert np.isclose(d.propensity.mean(), sim.params.target_rate, rtol=0, atol=1e-9)
    assert within_4se(r["observation_rate"], d.propensity.mean(), rating.size)
    # conditional on the draw of o, the flips are Binomial(n_observed_pos, rho_pos)
    assert within_4se(r["rho_pos"], sim.params.rho_pos, r["observed_positive"])
    assert within_4se(r["rho_neg"], sim.params.rho_neg, r["observed_negative"])
    assert (d.feedback[~d.observed] == -1).all()  # flips only on observed rows
    assert ((d.feedback != d.label) & d.observed).sum() > 0


@pytest.mark.parametrize("rho_pos,rho_neg", [(0.1, 0.2), (0.2, 0.1)])
def test_realised_rates_match_requested_on_many_rows(rho_pos, rho_neg):
    rating = np.random.default_rng(5).integers(0, 5, N).astype(float)
    check_rates(simulator(alpha=0.5, rho_pos=rho_pos, rho_neg=rho_neg, seed=3), rating, (0.0, 4.0))


def test_cap_binds_at_small_alpha_and_is_rescaled_until_the_mean_holds():
    # 10% top-rated rows: at alpha = 0.005 nearly all raw mass sits on them, so scaling to a
    # 0.2 mean pushes them past 1; the reference capped once and fell short.
    rng = np.random.default_rng(11)
    rating = np.where(rng.random(N) < 0.1, 4.0, rng.integers(0, 4, N)).astype(float)
    sim = simulator(alpha=0.005, target_rate=0.2, seed=1)
    raw = sim.params.alpha ** (5 - rescale(rating, (0, 4)))
    capped_once = np.minimum(raw * 0.2 / raw.mean(), 1.0)
    assert capped_once.mean() < 0.15
    p = sim.propensity(rating, (0, 4))
    assert p.max() == 1.0 and (p[rating == 4] == 1.0).all() and (p <= 1).all()
    # the uncapped rows keep the protocol's shape: ratios alpha^(s1 - s2)
    assert np.allclose(p[rating == 2][0] / p[rating == 3][0], sim.params.alpha)
    check_rates(sim, rating, (0.0, 4.0))


def test_scale_to_mean_cascades_and_handles_target_one():
    raw = np.array([1.0, 0.9, 0.5, 0.01, 0.01])
    p = scale_to_mean(raw, 0.6)
    assert np.isclose(p.mean(), 0.6) and p.max() == 1.0 and (p <= 1).all()
    assert np.allclose(scale_to_mean(raw, 1.0), 1.0)


def test_same_seed_same_draw_other_seed_other_draw():
    rating = np.random.default_rng(0).integers(0, 5, 20_000).astype(float)
    a, b = simulator(seed=7).simulate(rating), simulator(seed=7).simulate(rating)
    c = simulator(seed=8).simulate(rating)
    assert (a.observed == b.observed).all() and (a.feedback == b.feedback).all()
    assert (a.observed != c.observed).any()


@pytest.mark.parametrize("levels,expected", [
    (np.arange(5.0), 2.0),  # HelpSteer helpfulness 0-4
    # 21 distinct scores, repeated: the median of the *distinct* values, not of the rows
    (np.repeat([1, 2, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5, 8, 8.25, 8.5, 8.75, 9, 9.25, 9.5, 9.8, 10], [50] + [1] * 20), 7.0),
    (np.arange(4.0), 1.5),  # PKU severity 0-3
    (np.array([0.0, 1.0, 1.0, 0.0]), 0.5),  # binary preference
])
def test_label_threshold_is_the_median_of_distinct_levels(levels, expected):
    assert threshold(levels) == expected


def test_monotone_is_the_papers_formula_and_extremes_peaks_at_both_ends():
    s = np.arange(5.0)
    mono = simulator(alpha=0.5, target_rate=0.2).propensity(s, (0, 4))
    raw = 0.5 ** (5 - rescale(s, (0, 4)))
    assert np.allclose(mono, raw * 0.2 / raw.mean())
    ext = simulator(alpha=0.5, shape="extremes").propensity(s, (0, 4))
    assert ext[0] == ext[4] == ext.max() and ext[2] == ext.min()
    assert set(SHAPES) >= {"monotone", "extremes"}


def test_bad_settings_never_reach_the_simulator():
    with pytest.raises(RmpipeError, match=r"prepare\.simulate\.rho_pos \+ rho_neg must be < 1"):
        Simulator(SimulateParams(rho_pos=0.6, rho_neg=0.4))


def test_a_single_level_cannot_be_simulated():
    with pytest.raises(RmpipeError, match="single level"):
        simulator().simulate(np.ones(10))


def test_monotone_propensity_rises_with_the_rating_and_keeps_its_ratios():
    rating = np.random.default_rng(2).integers(0, 5, 5000).astype(float)
    p = simulator(alpha=0.3, target_rate=0.2).propensity(rating, (0, 4))
    by_level = np.array([p[rating == s][0] for s in range(5)])
    assert (np.diff(by_level) > 0).all()  # strictly increasing: lower reward, rarer feedback
    assert np.allclose(by_level[:-1] / by_level[1:], 0.3)  # alpha ** (5 - s'), one level apart
    assert all(np.ptp(p[rating == s]) == 0 for s in range(5))  # p depends on the rating only


def test_flips_touch_only_observed_rows_and_realise_rho_on_many_rows():
    rng = np.random.default_rng(4)
    label = (rng.random(N) < 0.4).astype(np.int8)
    u_pos, u_neg = rng.random(N), rng.random(N)
    f = flips(label, u_pos, u_neg, 0.15, 0.25)
    assert within_4se(f[label == 1].mean(), 0.15, int((label == 1).sum()))
    assert within_4se(f[label == 0].mean(), 0.25, int((label == 0).sum()))
    assert not flips(label, u_pos, u_neg, 0.0, 0.0).any()


def test_the_synthetic_world_draws_through_the_same_maths():
    from pipeline import simulation
    from pipeline.synthetic import LEVELS, make_world

    w = make_world(n=4000, alpha=0.05, target_rate=0.3, seed=5)
    assert np.array_equal(w.propensity, simulation.propensity(w.rating, 0.05, 0.3, scale=(0.0, 4.0)))
    assert np.isclose(w.propensity.mean(), 0.3) and (w.label == simulation.clean_label(w.rating, LEVELS)).all()
    fit = w.split != "test"
    r = simulation.realised_rates(w.observed[fit], w.feedback[fit], w.label[fit])
    assert 0.0 < r["rho_pos"] < 0.3 and 0.05 < r["rho_neg"] < 0.4
