"""Imputed labels ``ĝ`` for the doubly robust methods (docs/method.md, "CausalRM").

A classifier of ``ỹ`` on observed rows estimates the *noisy* label ``P(ỹ=1|x)``; the reference
imputes that. Because ``P(ỹ=1|x) = rho_neg + d · P(y=1|x)``, rmpipe inverts it to the *clean*
label by default: ``ĝ_clean = clip((ĝ_noisy − rho_neg) / d, 0, 1)``.
"""

from __future__ import annotations

import numpy as np

from stages.fit.noise import NoiseRates


def impute(noisy: np.ndarray, target: str, rates: NoiseRates | None) -> np.ndarray:
    """``ĝ`` from the feedback classifier's scores ``noisy``: as is, or inverted to clean."""
    noisy = np.clip(np.asarray(noisy, dtype=np.float64), 0.0, 1.0)
    if target == "noisy":
        return noisy
    if rates is None:
        raise ValueError("clean imputation needs noise rates")
    return np.clip((noisy - rates.rho_neg) / rates.d, 0.0, 1.0)
