"""Observational feedback from clean ratings: the paper's protocol (METHOD.md, "Simulating
observational feedback"), exactly, plus named alternative propensity shapes.

1. ``s' = 1 + 4 (s - lo) / (hi - lo)``;  2. ``p = alpha ** (5 - s')``, scaled to mean
``target_rate`` with the cap at 1 re-applied until the mean holds;  3. ``o ~ Bernoulli(p)``;
4. ``y = 1[s > m]``, ``m`` the median of the distinct occurring ratings;  5. flip ``y`` on
observed rows only: 1 -> 0 with ``rho_pos``, 0 -> 1 with ``rho_neg``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import SimulateParams
from pipeline.errors import RmpipeError

# shape name -> exponent of alpha as a function of s' in [1, 5]; 0 where feedback is surest.
SHAPES = {
    "monotone": lambda s: 5.0 - s,  # the paper's: the better the response, the likelier feedback
    "extremes": lambda s: 2.0 - np.abs(s - 3.0),  # users speak up on the very good and the very bad
}


@dataclass(frozen=True)
class Simulator:
    """The simulation settings, validated on construction (obp style).

    ``where`` only prefixes error messages (the params file, the flags)."""

    alpha: float = 0.5
    target_rate: float = 0.2
    rho_pos: float = 0.1
    rho_neg: float = 0.2
    shape: str = "monotone"
    seed: int = 0
    where: str = "simulate"

    def __post_init__(self):
        def bad(key: str, why: str):
            raise RmpipeError(f"{self.where}: prepare.simulate.{key} {why}")

        for key in ("alpha", "target_rate", "rho_pos", "rho_neg"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                bad(key, f"must be a finite number, got {value!r}")
        if not 0 < self.alpha <= 1:
            bad("alpha", f"must be in (0, 1], got {self.alpha}")
        if not 0 < self.target_rate <= 1:
            bad("target_rate", f"must be in (0, 1], got {self.target_rate}")
        for key in ("rho_pos", "rho_neg"):
            if not 0 <= getattr(self, key) < 1:
                bad(key, f"must be in [0, 1), got {getattr(self, key)}")
        if self.rho_pos + self.rho_neg >= 1:
            bad("rho_pos", f"+ rho_neg must be < 1 (labels would carry no signal), got "
                f"{self.rho_pos} + {self.rho_neg} = {self.rho_pos + self.rho_neg:g}")
        if self.shape not in SHAPES:
            bad("shape", f"must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            bad("seed", f"must be an integer, got {self.seed!r}")

    @classmethod
    def from_params(cls, p: SimulateParams, where: str = "simulate") -> "Simulator":
        return cls(p.alpha, p.target_rate, p.rho_pos, p.rho_neg, p.shape, p.seed, where)

    def propensity(self, rating: np.ndarray, scale: tuple[float, float] | None = None) -> np.ndarray:
        """True propensity per row: steps 1-2."""
        s = rescale(rating, scale)
        return scale_to_mean(self.alpha ** SHAPES[self.shape](s), self.target_rate)

    def simulate(self, rating: np.ndarray, scale: tuple[float, float] | None = None,
                 levels: np.ndarray | None = None) -> "Simulated":
        """Steps 1-5 on one array of ratings. ``levels`` (default: ``rating``) are the values the
        label threshold is the median of, so that a held-out split can share the threshold."""
        rating = np.asarray(rating, dtype=float)
        p = self.propensity(rating, scale)
        label = clean_label(rating, rating if levels is None else levels)
        rng = np.random.default_rng(self.seed)
        observed = rng.random(rating.size) < p
        u = rng.random(rating.size)
        flip = observed & np.where(label == 1, u < self.rho_pos, u < self.rho_neg)
        feedback = np.where(observed, label ^ flip, -1).astype(np.int8)
        return Simulated(observed, feedback, label, p)


@dataclass(frozen=True)
class Simulated:
    """One draw. ``feedback`` is -1 where not observed (the table stores null there)."""

    observed: np.ndarray
    feedback: np.ndarray
    label: np.ndarray
    propensity: np.ndarray

    def realised(self) -> dict:
        return realised_rates(self.observed, self.feedback, self.label, self.propensity)


def realised_rates(observed, feedback, label=None, propensity=None) -> dict:
    """Realised rates, to report beside the requested ones (METHOD.md: always). Flip rates
    need clean labels; ``feedback`` may be -1 or anything where not observed."""
    o = np.asarray(observed, dtype=bool)
    out = {"rows": int(o.size), "observed": int(o.sum()),
           "observation_rate": float(o.mean()) if o.size else None}
    if propensity is not None and o.size:
        p = np.asarray(propensity, dtype=float)
        out.update(mean_propensity=float(p.mean()), propensity_min=float(p.min()),
                   capped_rows=int((p >= 1.0).sum()))
    if label is not None and o.size:
        y, f = np.asarray(label), np.asarray(feedback)
        pos, neg = o & (y == 1), o & (y == 0)
        out.update(rho_pos=float((f[pos] == 0).mean()) if pos.any() else None,
                   rho_neg=float((f[neg] == 1).mean()) if neg.any() else None,
                   observed_positive=int(pos.sum()), observed_negative=int(neg.sum()),
                   label_positive_share=float(y.mean()))
    return out


def rescale(rating: np.ndarray, scale: tuple[float, float] | None = None) -> np.ndarray:
    """Step 1: ``s' = 1 + 4 (s - lo) / (hi - lo)`` with the source's known scale, else the
    occurring range."""
    rating = np.asarray(rating, dtype=float)
    lo, hi = scale if scale is not None else (rating.min(), rating.max())
    if not hi > lo:
        raise RmpipeError(f"rating: a single level ({lo:g}) cannot be simulated; need at least two")
    return 1.0 + 4.0 * (rating - lo) / (hi - lo)


def scale_to_mean(raw: np.ndarray, target: float) -> np.ndarray:
    """Step 2's scaling: multiply so the mean is ``target``, cap at 1, and rescale the uncapped
    rows until the mean holds (the reference capped once, so its mean fell short)."""
    raw = np.asarray(raw, dtype=float)
    n = raw.size
    capped = np.zeros(n, dtype=bool)
    while True:
        room = target * n - capped.sum()
        free = raw[~capped].sum()
        p = np.where(capped, 1.0, raw * (room / free if free > 0 else 0.0))
        newly = ~capped & (p >= 1.0)
        if not newly.any():
            return np.minimum(p, 1.0)
        capped |= newly


def clean_label(rating: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Step 4: ``y = 1[s > m]``, ``m`` the median of the distinct ratings that occur."""
    return (np.asarray(rating, dtype=float) > threshold(levels)).astype(np.int8)


def threshold(levels: np.ndarray) -> float:
    return float(np.median(np.unique(np.asarray(levels, dtype=float))))
