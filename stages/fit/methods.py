"""The methods registry: naive, ips, dr, noise, causalrm, causalrm_dr (METHOD.md, "Losses").

Each method is a small frozen dataclass that turns a row's nuisance values into the coefficients
``(a1, a0)`` of its loss ``a1 · ℓ(f, 1) + a0 · ℓ(f, 0)``; :mod:`stages.fit.train` serves them
all. Notation: ``o`` observed, ``ỹ`` feedback (0 where unobserved), ``w = o / p̂`` with ``p̂``
clipped, ``ĝ`` the imputed label, ``(c1, c0)`` the class coefficients of the observed term —
``(ỹ, 1 − ỹ)`` plain, or the noise-corrected surrogate's (:func:`losses.surrogate_coefficients`).
A DR loss ``ℓ(f, ĝ) + o · (ℓ_obs − ℓ(f, ĝ)) / p̂`` has coefficients
``a1 = ĝ + w · (c1 − ĝ)`` and ``a0 = (1 − ĝ) + w · (c0 − (1 − ĝ))`` (METHOD.md's split for DR).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.errors import RmpipeError
from stages.fit.losses import surrogate_coefficients


@dataclass(frozen=True)
class RowInputs:
    """Per-row nuisance values a method may need (arrays of one length)."""

    observed: np.ndarray  # bool
    feedback: np.ndarray  # 0/1, 0 where unobserved
    propensity: np.ndarray | None = None  # clipped p̂
    imputed: np.ndarray | None = None  # ĝ in [0, 1]
    rho_pos: float | None = None
    rho_neg: float | None = None

    def __post_init__(self):
        n = len(self.observed)
        for name in ("feedback", "propensity", "imputed"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} rows, observed has {n}")


@dataclass(frozen=True)
class Method:
    """Base: ``needs_*`` say which nuisance models a method uses."""

    name: ClassVar[str]
    needs_propensity: ClassVar[bool] = False
    needs_rates: ClassVar[bool] = False
    needs_imputation: ClassVar[bool] = False

    def coefficients(self, rows: RowInputs) -> tuple[np.ndarray, np.ndarray]:
        for need, value, what in ((self.needs_propensity, rows.propensity, "propensities"),
                                  (self.needs_rates, rows.rho_pos, "noise rates"),
                                  (self.needs_imputation, rows.imputed, "imputed labels")):
            if need and value is None:
                raise ValueError(f"method {self.name} needs {what}")
        a1, a0 = self._coefficients(rows)
        return np.asarray(a1, dtype=np.float32), np.asarray(a0, dtype=np.float32)

    def _coefficients(self, rows: RowInputs) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # helpers shared by the formulas below
    @staticmethod
    def _plain(rows: RowInputs) -> tuple[np.ndarray, np.ndarray]:
        y = rows.feedback.astype(np.float64)
        return y, 1.0 - y

    @staticmethod
    def _surrogate(rows: RowInputs) -> tuple[np.ndarray, np.ndarray]:
        return surrogate_coefficients(rows.feedback, rows.rho_pos, rows.rho_neg)

    @staticmethod
    def _weights(rows: RowInputs) -> np.ndarray:
        return rows.observed / rows.propensity

    @staticmethod
    def _doubly_robust(w, c1, c0, g) -> tuple[np.ndarray, np.ndarray]:
        return g + w * (c1 - g), (1.0 - g) + w * (c0 - (1.0 - g))


@dataclass(frozen=True)
class Naive(Method):
    """``o · ℓ(f, ỹ)``: ignores both noise and selection."""

    name: ClassVar[str] = "naive"

    def _coefficients(self, rows):
        c1, c0 = self._plain(rows)
        return rows.observed * c1, rows.observed * c0


@dataclass(frozen=True)
class IPS(Method):
    """``o · ℓ(f, ỹ) / p̂``: inverse-propensity weighting; fixes selection only."""

    name: ClassVar[str] = "ips"
    needs_propensity: ClassVar[bool] = True

    def _coefficients(self, rows):
        c1, c0 = self._plain(rows)
        w = self._weights(rows)
        return w * c1, w * c0


@dataclass(frozen=True)
class DR(Method):
    """``ℓ(f, ĝ) + o · (ℓ(f, ỹ) − ℓ(f, ĝ)) / p̂`` with ``ĝ`` the imputed *noisy* label (plain DR
    knows nothing of noise)."""

    name: ClassVar[str] = "dr"
    needs_propensity: ClassVar[bool] = True
    needs_imputation: ClassVar[bool] = True

    def _coefficients(self, rows):
        c1, c0 = self._plain(rows)
        return self._doubly_robust(self._weights(rows), c1, c0, rows.imputed)


@dataclass(frozen=True)
class Noise(Method):
    """``o · ℓ̃(f, ỹ)``: the noise-corrected surrogate (Natarajan et al. 2013), no weights."""

    name: ClassVar[str] = "noise"
    needs_rates: ClassVar[bool] = True

    def _coefficients(self, rows):
        c1, c0 = self._surrogate(rows)
        return rows.observed * c1, rows.observed * c0


@dataclass(frozen=True)
class CausalRM(Method):
    """``o · ℓ̃(f, ỹ) / p̂`` — the paper's method ("OME-IPS", arXiv 2603.18736)."""

    name: ClassVar[str] = "causalrm"
    needs_propensity: ClassVar[bool] = True
    needs_rates: ClassVar[bool] = True

    def _coefficients(self, rows):
        c1, c0 = self._surrogate(rows)
        w = self._weights(rows)
        return w * c1, w * c0


@dataclass(frozen=True)
class CausalRMDR(Method):
    """``ℓ(f, ĝ) + o · (ℓ̃(f, ỹ) − ℓ(f, ĝ)) / p̂`` ("OME-DR"); ``ĝ`` the clean label by default
    (:mod:`stages.fit.imputation`)."""

    name: ClassVar[str] = "causalrm_dr"
    needs_propensity: ClassVar[bool] = True
    needs_rates: ClassVar[bool] = True
    needs_imputation: ClassVar[bool] = True

    def _coefficients(self, rows):
        c1, c0 = self._surrogate(rows)
        return self._doubly_robust(self._weights(rows), c1, c0, rows.imputed)


METHODS: dict[str, Method] = {m.name: m() for m in (Naive, IPS, DR, Noise, CausalRM, CausalRMDR)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise RmpipeError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]
