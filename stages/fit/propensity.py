"""The propensity ``p̂(e) = P(o = 1 | e)`` and its diagnostics (METHOD.md, "Nuisance models").

Fitted on *all* training rows with K-fold cross-fitting (out-of-fold ``p̂``), or taken from a
``propensity_logged`` column as given; either way clipped to ``[clip_min, 1]``. Diagnostics:
AUC and Brier score of ``p̂`` against ``o``, expected calibration error, the share of rows
clipped, and the effective sample size of the weights ``w = o / p̂``: ``(Σw)² / Σw²`` (Kish).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import RmpipeError
from stages.fit.nuisance import KINDS, CrossFitClassifier


@dataclass
class PropensityModel:
    """Cross-fitted classifier of ``o`` (sklearn shape: ``fit`` returns self, learned ``_``)."""

    model: str = "logistic"
    folds: int = 5
    clip_min: float = 0.1
    c: float | None = 1.0
    seed: int = 0

    def __post_init__(self):
        check_clip_min(self.clip_min)
        if self.model not in KINDS:
            raise RmpipeError(f"fit.propensity.model must be one of {', '.join(KINDS)}, got {self.model!r}")

    def fit(self, Z: np.ndarray, observed: np.ndarray, rows: np.ndarray) -> "PropensityModel":
        """Fit on ``Z[rows]`` against ``observed[rows]``; ``oof_`` is the raw out-of-fold p̂."""
        self.classifier_ = CrossFitClassifier(self.model, self.folds, self.c, self.seed).fit(
            Z, observed[rows], rows)
        self.oof_ = self.classifier_.oof_
        return self

    def predict_raw(self, Z: np.ndarray) -> np.ndarray:
        return self.classifier_.predict(Z)

    def predict(self, Z: np.ndarray) -> np.ndarray:
        return clip(self.predict_raw(Z), self.clip_min)


def check_clip_min(clip_min: float) -> None:
    if not (isinstance(clip_min, (int, float)) and 0.0 < clip_min <= 1.0):
        raise RmpipeError(f"fit.propensity.clip_min must be in (0, 1], got {clip_min!r}")


def clip(p: np.ndarray, clip_min: float) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), clip_min, 1.0)


def logged_propensity(logged: np.ndarray, clip_min: float, where: str = "propensity_logged") -> np.ndarray:
    """A serving system's logged propensities, used as given (clipped)."""
    check_clip_min(clip_min)
    logged = np.asarray(logged, dtype=np.float64)
    if np.isnan(logged).any():
        n = int(np.isnan(logged).sum())
        raise RmpipeError(f"{where}: {n} row(s) lack a logged propensity; log it for every row, "
                          "or set fit.propensity.use_logged: false to fit a model instead")
    return clip(logged, clip_min)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean |mean(p) − mean(y)| over equal-width bins of ``p``."""
    edges = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        m = edges == b
        if m.any():
            err += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(err / max(len(p), 1))


def calibration_bins(p: np.ndarray, y: np.ndarray, bins: int = 10, name: str = "observed_rate") -> list[dict]:
    """Quantile bins of ``p``: mean predicted vs mean ``y`` (as ``name``), for calibration plots."""
    order = np.argsort(p, kind="stable")
    return [{"p_mean": float(p[idx].mean()), name: float(y[idx].mean()), "rows": int(len(idx))}
            for idx in np.array_split(order, bins) if len(idx)]


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's ``(Σw)² / Σw²``."""
    s2 = float(np.sum(weights ** 2))
    return float(np.sum(weights) ** 2 / s2) if s2 > 0 else 0.0


def diagnostics(p_raw: np.ndarray, observed: np.ndarray, clip_min: float, source: str) -> dict:
    """Diagnostics of raw (unclipped) ``p̂`` on training rows against ``o``."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    o = np.asarray(observed, dtype=float)
    p = clip(p_raw, clip_min)
    in_range = np.clip(p_raw, 0, 1)
    w = o / p
    ess = effective_sample_size(w)
    return {
        "source": source,
        "rows": int(len(o)),
        "observed_rate": float(o.mean()),
        "p_mean": float(np.mean(p_raw)),
        "auc": float(roc_auc_score(o, p_raw)) if 0 < o.sum() < len(o) else None,
        "brier": float(brier_score_loss(o, in_range)),
        "ece": expected_calibration_error(in_range, o),
        "clip_min": clip_min,
        "share_clipped": float(np.mean(np.asarray(p_raw) < clip_min)),
        "weight_max": float(w.max()) if len(w) else 0.0,
        "ess": ess,
        "ess_share_of_observed": ess / max(float(o.sum()), 1.0),
        "calibration": calibration_bins(in_range, o),
    }
