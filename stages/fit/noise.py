"""Noise rates: given, or estimated by anchor points (docs/method.md, "Nuisance models").

``P(ỹ = 1 | x) = rho_neg + d · P(y = 1 | x)`` with ``d = 1 − rho_pos − rho_neg``, so at anchors
(``P(y=1|x)`` ≈ 0 or 1) the feedback classifier's score reaches ``rho_neg`` and ``1 − rho_pos``.
Following Patrini et al. (2017) with a quantile instead of the extreme value for robustness:
``rho_neg ≈ quantile_{1−q}(h)``, ``1 − rho_pos ≈ quantile_q(h)`` over out-of-fold scores ``h``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from pipeline.errors import RmpipeError

SMALL_D = 0.2
WEAK_AUC = 0.6  # below this the feedback classifier's extremes are noise, not anchors


@dataclass(frozen=True)
class NoiseRates:
    """``rho_pos = P(ỹ=0 | y=1)``, ``rho_neg = P(ỹ=1 | y=0)``; ``source``: params | anchors."""

    rho_pos: float
    rho_neg: float
    source: str = "params"

    def __post_init__(self):
        for name in ("rho_pos", "rho_neg"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise RmpipeError(f"noise rate {name} must be in [0, 1), got {value!r} ({self.source})")
        if self.d <= 1e-9:  # d = 0 up to rounding is no signal either
            raise RmpipeError(
                f"noise rates rho_pos={self.rho_pos:.3f}, rho_neg={self.rho_neg:.3f} ({self.source}) "
                f"give 1 - rho_pos - rho_neg = {self.d:.3f} <= 0: the feedback carries no signal the "
                "correction can invert; give the rates in fit.noise if you know them")

    @property
    def d(self) -> float:
        return 1.0 - self.rho_pos - self.rho_neg

    def warning(self) -> str | None:
        """A message when ``d`` is small enough that the correction multiplies weights by ≥ 5."""
        if self.d < SMALL_D:
            return (f"noise rates rho_pos={self.rho_pos:.3f}, rho_neg={self.rho_neg:.3f} ({self.source}) "
                    f"leave d = {self.d:.3f} < {SMALL_D}: the surrogate multiplies losses by "
                    f"{1 / self.d:.1f}; anchor estimates collapse on embeddings with little signal")
        return None


def weak_anchor_warning(feedback_auc: float | None) -> str | None:
    """A message when anchor estimates rest on a classifier that barely predicts the feedback.

    Anchors need rows where ``P(y=1|x)`` is near 0 or 1; if the embedding hardly predicts ``ỹ``
    (out-of-fold AUC near 0.5) the score's quantiles are its overfitting, and the estimates
    collapse toward 0 while ``d`` looks healthy, so the small-``d`` warning never fires."""
    if feedback_auc is not None and feedback_auc < WEAK_AUC:
        return (f"anchor noise-rate estimates are unreliable: the feedback classifier's out-of-fold "
                f"AUC is {feedback_auc:.2f} < {WEAK_AUC}, so the embeddings barely predict the feedback; "
                "give fit.noise.rho_pos and rho_neg if you know them")
    return None


def anchor_rates(scores: np.ndarray, q: float = 0.97) -> NoiseRates:
    """Anchor-quantile estimates from out-of-fold scores of a classifier of ``ỹ``."""
    scores = np.asarray(scores, dtype=np.float64)
    rho_neg = float(np.quantile(scores, 1.0 - q))
    rho_pos = float(1.0 - np.quantile(scores, q))
    return NoiseRates(max(rho_pos, 0.0), max(rho_neg, 0.0), source="anchors")


def resolve_rates(rho_pos: float | None, rho_neg: float | None, scores: np.ndarray | None,
                  q: float = 0.97) -> NoiseRates:
    """Rates from params when both are given, else anchor estimates from ``scores``; warns (and
    the card records) when ``d`` is small."""
    if rho_pos is not None:
        rates = NoiseRates(float(rho_pos), float(rho_neg), source="params")
    else:
        if scores is None:
            raise ValueError("anchor estimation needs out-of-fold scores")
        rates = anchor_rates(scores, q)
    message = rates.warning()
    if message:
        warnings.warn(message, stacklevel=2)
    return rates
