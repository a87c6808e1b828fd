"""The propensity ``p̂(e) = P(o = 1 | e)`` and its diagnostics (docs/method.md, "Nuisance models").

Fitted on *all* training rows with K-fold cross-fitting (out-of-fold ``p̂``), or taken from a
``propensity_logged`` column as given; either way clipped to ``[clip_min, 1]``. Diagnostics:
AUC and Brier score of ``p̂`` against ``o``, expected calibration error, the share of rows
clipped, and the effective sample size of the weights ``w = o / p̂``: ``(Σw)² / Σw²`` (Kish).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import RmpipeError
from pipeline.nuisance import CrossFitClassifier


@dataclass
class PropensityModel:
    """Cross-fitted classifier of ``o`` (sklearn shape: ``fit`` returns self, learned ``_``).
    Its settings were checked when params were loaded (:class:`pipeline.config.PropensityParams`)."""

    model: str = "logistic"
    folds: int = 5
    clip_min: float = 0.1
    c: float | None = 1.0
    seed: int = 0

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


def clip(p: np.ndarray, clip_min: float) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), clip_min, 1.0)


def logged_propensity(logged: np.ndarray, clip_min: float, where: str = "propensity_logged") -> np.ndarray:
    """A serving system's logged propensities, used as given (clipped)."""
    logged = np.asarray(logged, dtype=np.float64)
    if np.isnan(logged).any():
        n = int(np.isnan(logged).sum())
        raise RmpipeError(f"{where}: {n} row(s) lack a logged propensity; log it for every row, "
                          "or set fit.propensity.use_logged: false to fit a model instead")
    return clip(logged, clip_min)


def quantile_bin_ids(p: np.ndarray, bins: int = 10) -> np.ndarray:
    """Each row's bin under ``calibration_curve(strategy="quantile")`` (its own rule, so the row
    counts and the truth curve share the bins of the ECE and the plot)."""
    edges = np.percentile(p, np.linspace(0, 100, bins + 1))
    return np.searchsorted(edges[1:-1], p)


def calibration_bins(p: np.ndarray, o: np.ndarray, bins: int = 10) -> list[dict]:
    """Quantile bins of ``p`` (scikit-learn's ``calibration_curve``): mean predicted vs observed
    rate and rows per bin — the one binning of the card's ECE and the calibration plot."""
    from sklearn.calibration import calibration_curve

    p, o = np.asarray(p, dtype=float), np.asarray(o, dtype=int)
    if len(p) == 0:
        return []
    rate, mean_p = calibration_curve(o, p, n_bins=bins, strategy="quantile")
    rows = np.bincount(quantile_bin_ids(p, bins), minlength=bins)
    return [{"p_mean": float(a), "observed_rate": float(b), "rows": int(n)}
            for a, b, n in zip(mean_p, rate, rows[rows > 0])]


def truth_bins(p: np.ndarray, true: np.ndarray, bins: int = 10) -> list[dict]:
    """The same bins of ``p``, with the mean true propensity (simulation only: a continuous
    target, which ``calibration_curve`` does not take)."""
    p, true = np.asarray(p, dtype=float), np.asarray(true, dtype=float)
    ids = quantile_bin_ids(p, bins)
    return [{"p_mean": float(p[ids == b].mean()), "true_mean": float(true[ids == b].mean()),
             "rows": int((ids == b).sum())} for b in np.unique(ids)]


def expected_calibration_error(p: np.ndarray, o: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |mean(p) − rate(o)| over :func:`calibration_bins`."""
    return _ece(calibration_bins(p, o, bins))


def _ece(table: list[dict]) -> float:
    total = sum(b["rows"] for b in table)
    return float(sum(b["rows"] * abs(b["p_mean"] - b["observed_rate"]) for b in table) / max(total, 1))


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
    table = calibration_bins(in_range, o)
    return {
        "source": source,
        "rows": int(len(o)),
        "observed_rate": float(o.mean()),
        "p_mean": float(np.mean(p_raw)),
        "auc": float(roc_auc_score(o, p_raw)) if 0 < o.sum() < len(o) else None,
        "brier": float(brier_score_loss(o, in_range)),
        "ece": _ece(table),
        "clip_min": clip_min,
        "share_clipped": float(np.mean(np.asarray(p_raw) < clip_min)),
        "weight_max": float(w.max()) if len(w) else 0.0,
        "ess": ess,
        "ess_share_of_observed": ess / max(float(o.sum()), 1.0),
        "calibration": table,
    }


# --- when not to trust the correction (no clean labels needed) ----------------------------
# The propensity model "cannot see the selection" when it barely ranks observed rows above
# unobserved ones. AUC 0.6 is the line the feedback classifier's anchors use too (noise.WEAK_AUC):
# below it the out-of-fold p̂ is mostly its own noise.
BLIND_AUC = 0.6
# Kish ESS ≥ 95% of the observed rows means the weights' coefficient of variation is ≤ 0.23
# (ESS/n = 1 / (1 + cv²)): the weighted loss is within a few percent of the naive one.
FLAT_ESS = 0.95
# Observed feedback more than 15 points from an even split (outside 35%–65% positive) says the
# feedback was selected on, or the labels are skewed; without clean labels the two look alike,
# and either way there is something a correction would have to undo.
SKEWED_FEEDBACK = 0.15
TRUST_ADVICE = ("try a stronger backbone, log propensities at serving time (propensity_logged), "
                "add covariates that drive feedback (fit.propensity.covariates), or collect a randomised "
                "audit (feedback on a small uniform random sample of responses), mark its rows "
                "`audit: true` and set fit.propensity.model: audit (docs/audit.md)")


def propensity_trust(observed: np.ndarray, p_hat_oof: np.ndarray, feedback: np.ndarray,
                     clip_min: float = 0.1) -> dict:
    """Whether the propensity correction can be trusted, from training rows alone: ``flag`` when
    the observed feedback is skewed (|positive share − 0.5| > SKEWED_FEEDBACK) yet the
    out-of-fold ``p̂`` cannot see who gave it (AUC < BLIND_AUC, or weights so flat that
    ESS / observed > FLAT_ESS, so nothing is corrected). ``feedback`` is read on observed rows only.
    Returns ``{flag, auc, ess_ratio, feedback_balance, reason}`` (balance = positive share)."""
    from sklearn.metrics import roc_auc_score

    o = np.asarray(observed, dtype=bool)
    p_raw = np.asarray(p_hat_oof, dtype=float)
    n_obs = int(o.sum())
    out = {"flag": False, "auc": None, "ess_ratio": None, "feedback_balance": None, "reason": ""}
    if n_obs == 0 or n_obs == len(o):
        out["reason"] = "no selection to correct: " + ("no row" if n_obs == 0 else "every row") + " is observed"
        return out
    auc = float(roc_auc_score(o, p_raw))
    ess_ratio = effective_sample_size(o / clip(p_raw, clip_min)) / n_obs
    balance = float(np.mean(np.asarray(feedback, dtype=float)[o]))
    out.update(auc=auc, ess_ratio=ess_ratio, feedback_balance=balance)
    blind = [f"its out-of-fold AUC for who gave feedback is {auc:.2f} < {BLIND_AUC}"] if auc < BLIND_AUC else []
    if ess_ratio > FLAT_ESS:
        blind.append(f"the weights' ESS is {ess_ratio:.0%} of the observed rows (> {FLAT_ESS:.0%}): "
                     "they correct almost nothing")
    skewed = abs(balance - 0.5) > SKEWED_FEEDBACK
    out["flag"] = bool(blind) and skewed
    if out["flag"]:
        out["reason"] = (f"the propensity model cannot see the selection: {'; '.join(blind)}, while the "
                         f"observed feedback is {balance:.0%} positive")
    elif blind:
        out["reason"] = (f"propensity weak ({'; '.join(blind)}) but the observed feedback is balanced "
                         f"({balance:.0%} positive): nothing says the selection needs correcting")
    else:
        out["reason"] = f"the propensity model sees the selection (AUC {auc:.2f}, ESS {ess_ratio:.0%} of observed)"
    return out


def trust_warning(trust: dict) -> str | None:
    """The one-line warning ``rmpipe fit`` prints when :func:`propensity_trust` flags."""
    if not trust["flag"]:
        return None
    return (f"do not trust the propensity correction (ips, dr, causalrm): {trust['reason']}, so those "
            f"heads may do no better than naive; {TRUST_ADVICE}")
