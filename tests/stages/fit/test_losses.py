"""The surrogate's defining property, its plain limit, the per-class split and the guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.fit.losses import (bce_neg, bce_pos, guarded_risk, split_risk, step_objective,
                               surrogate_coefficients, surrogate_loss)


@pytest.mark.parametrize("seed", range(5))
def test_surrogate_is_unbiased_given_the_clean_label(seed):
    """E[ℓ̃(f, ỹ) | y] = ℓ(f, y): ỹ = 1 - y with probability rho_y (Natarajan et al. 2013, Lemma 1)."""
    rng = np.random.default_rng(seed)
    f = torch.tensor(rng.normal(0, 3, 200), dtype=torch.float64)
    rho_pos, rho_neg = rng.uniform(0, 0.45, 2)
    ones, zeros = torch.ones(200), torch.zeros(200)
    l1, l0 = surrogate_loss(f, ones, rho_pos, rho_neg), surrogate_loss(f, zeros, rho_pos, rho_neg)
    expect_y1 = (1 - rho_pos) * l1 + rho_pos * l0
    expect_y0 = (1 - rho_neg) * l0 + rho_neg * l1
    assert torch.allclose(expect_y1, bce_pos(f), atol=1e-6, rtol=0)
    assert torch.allclose(expect_y0, bce_neg(f), atol=1e-6, rtol=0)


def test_zero_rates_give_plain_cross_entropy():
    f = torch.linspace(-8, 8, 101, dtype=torch.float64)
    y = (torch.arange(101) % 2).to(torch.float64)
    expected = F.binary_cross_entropy_with_logits(f, y, reduction="none")
    assert torch.allclose(surrogate_loss(f, y, 0.0, 0.0), expected, atol=1e-12)


def test_split_parts_sum_to_the_plain_surrogate_risk():
    rng = np.random.default_rng(0)
    f = torch.tensor(rng.normal(0, 2, 50))
    y = rng.integers(0, 2, 50)
    c1, c0 = surrogate_coefficients(y, 0.1, 0.2)
    r1, r0 = split_risk(f, torch.tensor(c1), torch.tensor(c0))
    assert float(r1 + r0) == pytest.approx(float(surrogate_loss(f, torch.tensor(y), 0.1, 0.2).mean()))


def test_guard_steps_against_a_negative_part_and_reports_the_clamped_risk():
    r1 = torch.tensor(-0.5, requires_grad=True)
    r0 = torch.tensor(0.8, requires_grad=True)
    loss, fired = step_objective(r1, r0, nonnegative=True, beta=0.0, gamma=1.0)
    loss.backward()
    assert fired and float(loss.detach()) == pytest.approx(0.5)
    assert float(r1.grad) == -1.0 and r0.grad is None  # ascend the negative part only (nnPU)
    assert guarded_risk(-0.5, 0.8) == pytest.approx(0.8)
    plain, fired = step_objective(r1, r0, nonnegative=False)
    assert not fired and float(plain.detach()) == pytest.approx(0.3)
    ok, fired = step_objective(torch.tensor(0.1), torch.tensor(0.2))
    assert not fired and float(ok) == pytest.approx(0.3)
