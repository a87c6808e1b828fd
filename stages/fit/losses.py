"""CausalRM's losses, written as coefficients on the two cross-entropy terms.

Every method's per-row loss (docs/method.md, "Losses") is ``a1 · ℓ(f, 1) + a0 · ℓ(f, 0)`` with
``ℓ(f, 1) = −log σ(f)`` and ``ℓ(f, 0) = −log(1 − σ(f))``; the methods differ only in the
coefficients (see :mod:`stages.fit.methods`). Summing the two terms separately gives the
per-class split of the non-negative guard:
``R₁ = mean(a1 · ℓ(f, 1))`` and ``R₀ = mean(a0 · ℓ(f, 0))`` (Kiryo et al. 2017, nnPU, with
docs/method.md's split), each an estimate of a clean class's risk and so ``≥ 0`` for any real head.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bce_pos(logits: torch.Tensor) -> torch.Tensor:
    """``ℓ(f, 1) = −log σ(f) = softplus(−f)`` (numerically stable)."""
    return F.softplus(-logits)


def bce_neg(logits: torch.Tensor) -> torch.Tensor:
    """``ℓ(f, 0) = −log(1 − σ(f)) = softplus(f)``."""
    return F.softplus(logits)


def surrogate_coefficients(feedback: np.ndarray, rho_pos: float, rho_neg: float
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Class coefficients ``(c1, c0)`` of the backward-corrected loss (Natarajan et al. 2013):

    ``ℓ̃(f, 1) = [(1 − rho_neg) · ℓ(f, 1) − rho_pos · ℓ(f, 0)] / d``,
    ``ℓ̃(f, 0) = [(1 − rho_pos) · ℓ(f, 0) − rho_neg · ℓ(f, 1)] / d``, ``d = 1 − rho_pos − rho_neg``;
    so for observed label ``ỹ``: ``c1 = [(1 − rho_neg)·1[ỹ=1] − rho_neg·1[ỹ=0]] / d`` and
    ``c0 = [(1 − rho_pos)·1[ỹ=0] − rho_pos·1[ỹ=1]] / d`` (docs/method.md's R₁/R₀ split).
    """
    d = 1.0 - rho_pos - rho_neg
    pos = np.asarray(feedback) == 1
    c1 = np.where(pos, 1.0 - rho_neg, -rho_neg) / d
    c0 = np.where(pos, -rho_pos, 1.0 - rho_pos) / d
    return c1, c0


def surrogate_loss(logits: torch.Tensor, feedback: torch.Tensor, rho_pos: float,
                   rho_neg: float) -> torch.Tensor:
    """Per-row ``ℓ̃(f, ỹ)``; with both rates 0 it is plain BCE."""
    c1, c0 = surrogate_coefficients(feedback.cpu().numpy(), rho_pos, rho_neg)
    c1 = torch.as_tensor(c1, dtype=logits.dtype)
    c0 = torch.as_tensor(c0, dtype=logits.dtype)
    return c1 * bce_pos(logits) + c0 * bce_neg(logits)


def split_risk(logits: torch.Tensor, a1: torch.Tensor, a0: torch.Tensor, scale: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R₁, R₀)`` of a batch: per-class means of the coefficient-weighted losses, times
    ``scale`` (the share of the population the batch's rows stand for)."""
    r1 = (a1 * bce_pos(logits)).mean() * scale
    r0 = (a0 * bce_neg(logits)).mean() * scale
    return r1, r0


def guarded_risk(r1: float, r0: float) -> float:
    """``max(0, R₁) + max(0, R₀)``: the risk used for early stopping and selection."""
    return max(0.0, float(r1)) + max(0.0, float(r0))


def step_objective(r1: torch.Tensor, r0: torch.Tensor, nonnegative: bool = True,
                   beta: float = 0.0, gamma: float = 1.0) -> tuple[torch.Tensor, bool]:
    """What to back-propagate for one batch, and whether the guard fired.

    Plain: ``R₁ + R₀``. Non-negative (nnPU, Kiryo et al. 2017, Algorithm 1, with two parts):
    if a part fell below ``−β``, step *against* it — back-propagate ``−γ · (that part)`` alone —
    rather than following the risk further below zero; otherwise step on ``R₁ + R₀``.
    """
    if nonnegative:
        low = [r for r in (r1, r0) if float(r.detach()) < -beta]
        if low:
            return -gamma * torch.stack(low).sum(), True
    return r1 + r0, False
