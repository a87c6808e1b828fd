"""Observational feedback from clean ratings: the paper's protocol (docs/method.md, "Simulating
observational feedback"), exactly, plus named alternative propensity shapes and the implicit
(positive-unlabelled) variant. The one home of this maths: prepare, the synthetic worlds of the
tests and the benches all call it.

1. ``s' = 1 + 4 (s - lo) / (hi - lo)``;  2. ``p = alpha ** (5 - s')``, scaled to mean
``target_rate`` with the cap at 1 re-applied until the mean holds;  3. ``o ~ Bernoulli(p)``;
4. ``y = 1[s > m]``, ``m`` the median of the distinct occurring ratings;  5. flip ``y`` on
observed rows only: 1 -> 0 with ``rho_pos``, 0 -> 1 with ``rho_neg``.
Implicit: ``a = y · Bernoulli(p)``, plus mis-clicks ``a = 1`` with ``rho_neg`` on ``y = 0`` rows.
Audit (docs/audit.md): a uniform ``audit_share`` of the rows has feedback recorded whatever its
propensity, with the users' flips (``audit_labels: noisy``) or none (``clean``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config import ImplicitSimParams, SimulateParams
from pipeline.errors import RmpipeError

# shape name -> exponent of alpha as a function of s' in [1, 5]; 0 where feedback is surest.
SHAPES = {
    "monotone": lambda s: 5.0 - s,  # the paper's: the better the response, the likelier feedback
    "extremes": lambda s: 2.0 - np.abs(s - 3.0),  # users speak up on the very good and the very bad
}


@dataclass(frozen=True)
class Simulator:
    """Draws feedback with ``params``, which checked their own values when they were loaded
    (pipeline.config), so nothing here re-checks them."""

    params: SimulateParams = field(default_factory=SimulateParams)

    def propensity(self, rating: np.ndarray, scale: tuple[float, float] | None = None) -> np.ndarray:
        """True propensity per row: steps 1-2."""
        return propensity(rating, self.params.alpha, self.params.target_rate, self.params.shape, scale)

    def simulate(self, rating: np.ndarray, scale: tuple[float, float] | None = None,
                 levels: np.ndarray | None = None) -> "Simulated":
        """Steps 1-5 on one array of ratings. ``levels`` (default: ``rating``) are the values the
        label threshold is the median of, so that a held-out split can share the threshold."""
        rating = np.asarray(rating, dtype=float)
        p = self.propensity(rating, scale)
        label = clean_label(rating, rating if levels is None else levels)
        rng = np.random.default_rng(self.params.seed)
        observed = rng.random(rating.size) < p
        u = rng.random(rating.size)
        flipped = observed & flips(label, u, u, self.params.rho_pos, self.params.rho_neg)
        feedback = np.where(observed, label ^ flipped, -1).astype(np.int8)
        return Simulated(observed, feedback, label, p)

    def simulate_implicit(self, ip: ImplicitSimParams, rating: np.ndarray,
                          scale: tuple[float, float] | None = None,
                          levels: np.ndarray | None = None) -> "ImplicitDraw":
        """``a = y · Bernoulli(p)`` (+ mis-clicks on ``y = 0`` at ``ip.rho_neg``), seeded by
        ``params.seed``; ``rho_pos``/``rho_neg`` of the explicit noise are not used."""
        rating = np.asarray(rating, dtype=float)
        p = self.propensity(rating, scale)
        label = clean_label(rating, rating if levels is None else levels)
        rng = np.random.default_rng(self.params.seed)
        u, v = rng.random(rating.size), rng.random(rating.size)
        acted = np.where(label == 1, u < p, v < ip.rho_neg).astype(np.int8)
        return ImplicitDraw(acted, label, p)


    def draw_audit(self, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A randomised audit of ``round(audit_share · n)`` rows drawn uniformly: ``(rows, feedback)``
        with ``feedback`` the label, flipped at ``rho_pos``/``rho_neg`` when the audit's answers
        come from users. Its own random stream: the rest of the draw is the same with or without it."""
        label = np.asarray(label, dtype=np.int8)
        rng = np.random.default_rng([self.params.seed, AUDIT_STREAM])
        rows = np.zeros(label.size, dtype=bool)
        rows[rng.choice(label.size, size=round(self.params.audit_share * label.size), replace=False)] = True
        u = rng.random(label.size)
        flipped = rows & flips(label, u, u, self.params.rho_pos, self.params.rho_neg) \
            if self.params.audit_labels == "noisy" else np.zeros(label.size, dtype=bool)
        return rows, (label ^ flipped).astype(np.int8)


AUDIT_STREAM = 7  # seeds the audit's generator beside params.seed


@dataclass(frozen=True)
class Simulated:
    """One draw. ``feedback`` is -1 where not observed (the table stores null there)."""

    observed: np.ndarray
    feedback: np.ndarray
    label: np.ndarray
    propensity: np.ndarray

    def realised(self) -> dict:
        return realised_rates(self.observed, self.feedback, self.label, self.propensity)


@dataclass(frozen=True)
class ImplicitDraw:
    """One implicit draw: ``acted`` 0/1 per row, the clean ``label``, the labelling propensity."""

    acted: np.ndarray
    label: np.ndarray
    propensity: np.ndarray

    def realised(self) -> dict:
        return implicit_rates(self.acted, self.label, self.propensity)


def propensity(rating: np.ndarray, alpha: float, target_rate: float, shape: str = "monotone",
               scale: tuple[float, float] | None = None) -> np.ndarray:
    """Steps 1-2: ``alpha ** shape(s')`` scaled to mean ``target_rate``."""
    return scale_to_mean(alpha ** SHAPES[shape](rescale(rating, scale)), target_rate)


def flips(label: np.ndarray, u_pos: np.ndarray, u_neg: np.ndarray, rho_pos: float,
          rho_neg: float) -> np.ndarray:
    """Step 5's coin: a true 1 flips where ``u_pos < rho_pos``, a true 0 where ``u_neg < rho_neg``
    (uniforms passed in, so each caller keeps its own random stream); mask with ``observed``."""
    return np.where(np.asarray(label) == 1, u_pos < rho_pos, u_neg < rho_neg)


def realised_rates(observed, feedback, label=None, propensity=None) -> dict:
    """Realised rates, to report beside the requested ones (docs/method.md: always). Flip rates
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


def implicit_rates(acted, label=None, propensity=None) -> dict:
    """Realised rates of implicit feedback; the truths need clean labels (simulation)."""
    a = np.asarray(acted).astype(int)
    out = {"rows": int(a.size), "acted": int(a.sum()), "acted_rate": float(a.mean()) if a.size else None}
    if label is not None and a.size:
        y = np.asarray(label).astype(int)
        pos, neg = y == 1, y == 0
        out.update(prior=float(y.mean()),
                   positives_acted_on=float(a[pos].mean()) if pos.any() else None,  # realised c
                   misclick_rate=float(a[neg].mean()) if neg.any() else None,
                   acted_that_are_negative=float(1 - y[a == 1].mean()) if a.any() else None)
        if propensity is not None:
            e = np.asarray(propensity, dtype=float)
            out.update(c_expected=float(e[pos].mean()) if pos.any() else None,
                       e_min_positive=float(e[pos].min()) if pos.any() else None,
                       e_max_positive=float(e[pos].max()) if pos.any() else None,
                       scar_holds=bool(pos.any() and np.ptp(e[pos]) < 1e-12))
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


def rating_info(rating: np.ndarray, scale: tuple[float, float] | None = None) -> dict:
    """What a simulation records about the rating it started from: its scale, the levels that
    occur, and the label threshold (step 4) every split shares."""
    rating = np.asarray(rating, dtype=float)
    return {"rating_scale": list(scale) if scale else [float(rating.min()), float(rating.max())],
            "rating_levels": sorted(float(v) for v in np.unique(rating)),
            "label_threshold": threshold(rating)}


def threshold(levels: np.ndarray) -> float:
    return float(np.median(np.unique(np.asarray(levels, dtype=float))))
