"""The methods registry: naive, ips, dr, noise, causalrm, causalrm_dr (docs/method.md, "Losses"), and
for implicit feedback pu_naive, scar, upu, nnpu, sar, sar_noise (docs/method.md, "Implicit feedback").

Each method is a small frozen dataclass that turns a row's nuisance values into the coefficients
``(a1, a0)`` of its loss ``a1 · ℓ(f, 1) + a0 · ℓ(f, 0)``; :mod:`stages.fit.train` serves them
all. Notation: ``o`` observed, ``ỹ`` feedback (0 where unobserved), ``w = o / p̂`` with ``p̂``
clipped, ``ĝ`` the imputed label, ``(c1, c0)`` the class coefficients of the observed term —
``(ỹ, 1 − ỹ)`` plain, or the noise-corrected surrogate's (:func:`losses.surrogate_coefficients`).
A DR loss ``ℓ(f, ĝ) + o · (ℓ_obs − ℓ(f, ĝ)) / p̂`` has coefficients
``a1 = ĝ + w · (c1 − ĝ)`` and ``a0 = (1 − ĝ) + w · (c0 − (1 − ĝ))`` (docs/method.md's split for DR).

Implicit methods (``feedback = "implicit"``) read ``a`` (in ``feedback``: 1 acted, 0 not) on every
row. Their names differ from the explicit ones (``pu_naive``, not ``naive``): one registry, and a
method of the other kind than the table's is refused by name (:func:`check_kind`).
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
    # implicit feedback (stages.fit.pu): each row's split, labelling propensity e(x) (clipped),
    # the constant labelling frequency c, the class prior π, the mis-click rate
    split: np.ndarray | None = None
    labelling: np.ndarray | None = None
    c: float | None = None
    prior: float | None = None
    misclick: float | None = None
    # a randomised audit (stages.fit.audit): which rows it holds, whether its answers are clean,
    # and the label-dependent propensity (π(x, 1), π(x, 0)), clipped, 1 on audit rows
    audit: np.ndarray | None = None
    audit_clean: bool = False
    class_propensity: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self):
        n = len(self.observed)
        if self.class_propensity is not None and any(len(p) != n for p in self.class_propensity):
            raise ValueError(f"class_propensity has the wrong length, observed has {n}")
        for name in ("feedback", "propensity", "imputed", "split", "labelling", "audit"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} rows, observed has {n}")


@dataclass(frozen=True)
class Method:
    """Base: ``needs_*`` say which nuisance models a method uses."""

    name: ClassVar[str]
    feedback: ClassVar[str] = "explicit"  # the table's kind it learns from (prepare.feedback)
    needs_propensity: ClassVar[bool] = False
    needs_rates: ClassVar[bool] = False
    needs_imputation: ClassVar[bool] = False
    needs_c: ClassVar[bool] = False
    needs_prior: ClassVar[bool] = False
    needs_labelling: ClassVar[bool] = False
    needs_misclick: ClassVar[bool] = False
    guard: ClassVar[str | None] = None  # None: fit.guard decides; "plain" | "nonnegative": fixed
    needs_audit: ClassVar[bool] = False  # learns from the audit rows (audit_only, logs_plus_audit)

    def uses_audit(self, rows: RowInputs) -> bool:
        """Whether audit rows carry this method's loss: the audit methods, and the propensity
        methods given π(x, y) from the audit. Every other method learns from the logs alone."""
        return self.needs_audit or (self.needs_propensity and rows.class_propensity is not None)

    def coefficients(self, rows: RowInputs) -> tuple[np.ndarray, np.ndarray]:
        if self.needs_audit and (rows.audit is None or not rows.audit.any()):
            raise RmpipeError(f"method {self.name} learns from a randomised audit, and the table has no "
                              "audit rows (a true `audit` column)")
        propensity = rows.propensity if rows.class_propensity is None else rows.class_propensity
        for need, value, what in ((self.needs_propensity, propensity, "propensities"),
                                  (self.needs_rates, rows.rho_pos, "noise rates"),
                                  (self.needs_imputation, rows.imputed, "imputed labels"),
                                  (self.needs_c, rows.c, "a labelling frequency c"),
                                  (self.needs_prior, rows.prior, "a class prior"),
                                  (self.needs_prior, rows.split, "splits"),
                                  (self.needs_labelling, rows.labelling, "labelling propensities"),
                                  (self.needs_misclick, rows.misclick, "a mis-click rate")):
            if need and value is None:
                raise ValueError(f"method {self.name} needs {what}")
        a1, a0 = (np.array(a, dtype=np.float64) for a in self._coefficients(rows))
        if rows.audit is not None and not self.uses_audit(rows):
            a1[rows.audit], a0[rows.audit] = 0.0, 0.0
        return a1.astype(np.float32), a0.astype(np.float32)

    def _coefficients(self, rows: RowInputs) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # helpers shared by the formulas below
    @staticmethod
    def _plain(rows: RowInputs) -> tuple[np.ndarray, np.ndarray]:
        y = rows.feedback.astype(np.float64)
        return y, 1.0 - y

    @staticmethod
    def _surrogate(rows: RowInputs) -> tuple[np.ndarray, np.ndarray]:
        """The noise-corrected coefficients; plain on audit rows whose answers are clean."""
        c1, c0 = surrogate_coefficients(rows.feedback, rows.rho_pos, rows.rho_neg)
        if rows.audit is not None and rows.audit_clean:
            y = rows.feedback.astype(np.float64)
            c1, c0 = np.where(rows.audit, y, c1), np.where(rows.audit, 1.0 - y, c0)
        return c1, c0

    @staticmethod
    def _weights(rows: RowInputs) -> tuple[np.ndarray, np.ndarray]:
        """``(w1, w0)``: the weights on the ``ℓ(f, 1)`` and ``ℓ(f, 0)`` coefficients — ``o / p̂``
        for both, or ``o / π(x, 1)`` and ``o / π(x, 0)`` with a label-dependent propensity."""
        if rows.class_propensity is not None:
            pi1, pi0 = rows.class_propensity
            return rows.observed / pi1, rows.observed / pi0
        w = rows.observed / rows.propensity
        return w, w

    @staticmethod
    def _dr_weight(rows: RowInputs, noisy: bool) -> np.ndarray:
        """``o · h(ỹ)`` with ``E[h(ỹ) | y] = 1 / π(x, y)``: what the imputed term is multiplied by
        on observed rows. One propensity: ``h = 1 / p̂``. Per class, through the flips (a 2×2
        system with determinant ``d``): ``h(1) = [(1 − rho_neg)/π₁ − rho_pos/π₀] / d``,
        ``h(0) = [(1 − rho_pos)/π₀ − rho_neg/π₁] / d`` (docs/audit.md). Audit rows carry
        ``π₁ = π₀ = 1``, where both forms give ``h = 1``, clean answers or not."""
        if rows.class_propensity is None:
            return rows.observed / rows.propensity
        pi1, pi0 = rows.class_propensity
        pos = rows.feedback == 1
        if noisy:
            rp, rn = rows.rho_pos, rows.rho_neg
            d = 1.0 - rp - rn
            h = np.where(pos, ((1 - rn) / pi1 - rp / pi0) / d, ((1 - rp) / pi0 - rn / pi1) / d)
        else:
            h = np.where(pos, 1 / pi1, 1 / pi0)
        return rows.observed * h

    @staticmethod
    def _doubly_robust(w, c1, c0, g, h) -> tuple[np.ndarray, np.ndarray]:
        """``a1 = ĝ + w1·c1 − ĝ·h``, ``a0 = (1 − ĝ) + w0·c0 − (1 − ĝ)·h`` with ``w = (w1, w0)``
        and ``h = o·h(ỹ)`` (:meth:`_dr_weight`); one propensity: ``ĝ + w·(c1 − ĝ)``."""
        w1, w0 = w
        return g + w1 * c1 - g * h, (1.0 - g) + w0 * c0 - (1.0 - g) * h


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
        w1, w0 = self._weights(rows)
        return w1 * c1, w0 * c0


@dataclass(frozen=True)
class DR(Method):
    """``ℓ(f, ĝ) + o · (ℓ(f, ỹ) − ℓ(f, ĝ)) / p̂`` with ``ĝ`` the imputed *noisy* label (plain DR
    knows nothing of noise)."""

    name: ClassVar[str] = "dr"
    needs_propensity: ClassVar[bool] = True
    needs_imputation: ClassVar[bool] = True

    def _coefficients(self, rows):
        c1, c0 = self._plain(rows)
        return self._doubly_robust(self._weights(rows), c1, c0, rows.imputed, self._dr_weight(rows, False))


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
        w1, w0 = self._weights(rows)
        return w1 * c1, w0 * c0


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
        return self._doubly_robust(self._weights(rows), c1, c0, rows.imputed, self._dr_weight(rows, True))


# --- heads only an audit makes possible ----------------------------------------------------
@dataclass(frozen=True)
class AuditOnly(Method):
    """A head on the audit rows alone — the honest competitor an audit brings: noise-corrected
    when users answered the audit, plain when annotators did; the logs carry no loss."""

    name: ClassVar[str] = "audit_only"
    needs_rates: ClassVar[bool] = True
    needs_audit: ClassVar[bool] = True

    def _coefficients(self, rows):
        c1, c0 = self._surrogate(rows) if not rows.audit_clean else self._plain(rows)
        return rows.audit * c1, rows.audit * c0


@dataclass(frozen=True)
class LogsPlusAudit(Method):
    """Naive on the logs and the audit together (``o · ℓ(f, ỹ)`` over both): what a user with an
    audit tries first."""

    name: ClassVar[str] = "logs_plus_audit"
    needs_audit: ClassVar[bool] = True

    def _coefficients(self, rows):
        c1, c0 = self._plain(rows)
        return rows.observed * c1, rows.observed * c0


# --- implicit feedback (positive-unlabelled) -----------------------------------------------
def _labelled(a: np.ndarray, e) -> tuple[np.ndarray, np.ndarray]:
    """sar's coefficients with labelling propensity ``e`` (scalar or per row): acted rows
    ``a1 = 1/e``, ``a0 = 1 − 1/e``; other rows ``a1 = 0``, ``a0 = 1``. ``E[a/e | y=1] = 1`` makes
    the risk unbiased for the clean one (Bekker, Robberechts & Davis 2019)."""
    w = np.asarray(a, dtype=np.float64) / e
    return w, 1.0 - w


@dataclass(frozen=True)
class PUNaive(Method):
    """Silence is a "no": ``a1 = a``, ``a0 = 1 − a`` — what every user starts from."""

    name: ClassVar[str] = "pu_naive"
    feedback: ClassVar[str] = "implicit"

    def _coefficients(self, rows):
        a = rows.feedback.astype(np.float64)
        return a, 1.0 - a


@dataclass(frozen=True)
class SCAR(Method):
    """Constant labelling frequency ``c`` (Elkan & Noto 2008): sar's loss with ``e = c``; ``c``
    given (fit.pu.c) or estimated by their e1 on a held-out classifier of the action."""

    name: ClassVar[str] = "scar"
    feedback: ClassVar[str] = "implicit"
    needs_c: ClassVar[bool] = True

    def _coefficients(self, rows):
        return _labelled(rows.feedback, rows.c)


@dataclass(frozen=True)
class UPU(Method):
    """Unbiased PU (du Plessis, Niu & Sugiyama 2015), single-sample form with class prior ``π``:
    ``π · mean_acted[ℓ(f,1) − ℓ(f,0)] + mean_all[ℓ(f,0)]`` per split, i.e. acted rows
    ``a1 = π n / n_acted``, ``a0 = 1 − a1``, others ``a0 = 1``. Trained plain (unguarded)."""

    name: ClassVar[str] = "upu"
    feedback: ClassVar[str] = "implicit"
    needs_prior: ClassVar[bool] = True
    guard: ClassVar[str | None] = "plain"

    def _coefficients(self, rows):
        a = rows.feedback.astype(np.float64)
        e = np.ones(len(a))
        for name in np.unique(rows.split):
            m = rows.split == name
            acted = a[m].mean()
            if acted == 0:
                raise RmpipeError(f"method {self.name}: no acted rows in the {name} split")
            e[m] = acted / rows.prior  # n_acted / (π n): the implied labelling frequency
        return _labelled(a, e)


@dataclass(frozen=True)
class NNPU(UPU):
    """Non-negative PU (Kiryo et al. 2017): upu with the negative part ``R₀`` clamped at 0 —
    the existing guard, always on for this method."""

    name: ClassVar[str] = "nnpu"
    guard: ClassVar[str | None] = "nonnegative"


@dataclass(frozen=True)
class SAR(Method):
    """Per-row labelling propensity ``e(x)`` (Bekker, Robberechts & Davis 2019): acted rows
    ``a1 = 1/e``, ``a0 = 1 − 1/e``; ``e`` from propensity_logged or, without it, SAR-EM on
    fit.pu.propensity_columns (:class:`stages.fit.pu.LabellingEM`), clipped like ``p̂``."""

    name: ClassVar[str] = "sar"
    feedback: ClassVar[str] = "implicit"
    needs_labelling: ClassVar[bool] = True

    def _coefficients(self, rows):
        return _labelled(rows.feedback, rows.labelling)


@dataclass(frozen=True)
class SARNoise(Method):
    """sar with mis-clicks at ``rho_neg = P(a=1 | y=0)``: the backward-corrected surrogate with
    per-row ``rho_pos = 1 − e(x)``, so ``d = e − rho_neg`` (> 0 required):
    acted ``a1 = (1 − rho_neg)/d``, ``a0 = −(1 − e)/d``; not acted ``a1 = −rho_neg/d``, ``a0 = e/d``.
    Then ``E[a1 | y] = y`` and ``E[a0 | y] = 1 − y``; with ``rho_neg = 0`` it is sar."""

    name: ClassVar[str] = "sar_noise"
    feedback: ClassVar[str] = "implicit"
    needs_labelling: ClassVar[bool] = True
    needs_misclick: ClassVar[bool] = True

    def _coefficients(self, rows):
        e = np.asarray(rows.labelling, dtype=np.float64)
        low = e <= rows.misclick
        if low.any():
            raise RmpipeError(f"method {self.name}: {int(low.sum())} row(s) have a labelling propensity "
                              f"e(x) <= the mis-click rate {rows.misclick:g}: a click there says "
                              "nothing about quality (d = e − rho_neg must be > 0)")
        return surrogate_coefficients(rows.feedback, 1.0 - e, rows.misclick)


METHODS: dict[str, Method] = {m.name: m() for m in (Naive, IPS, DR, Noise, CausalRM, CausalRMDR,
                                                     AuditOnly, LogsPlusAudit, PUNaive, SCAR, UPU, NNPU, SAR, SARNoise)}


def methods_for(kind: str, audit: bool = False) -> list[str]:
    """The registry's method names for feedback kind ``kind`` (explicit | implicit); with
    ``audit``, the ones that need audit rows (pipeline.config.AUDIT_METHODS) instead."""
    return [n for n, m in METHODS.items() if m.feedback == kind and m.needs_audit == audit]


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise RmpipeError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]


def check_kind(methods, kind: str, where: str = "fit") -> None:
    """Refuse a method of the other feedback kind than the table's, by name."""
    for m in methods:
        if m.feedback != kind:
            raise RmpipeError(f"{where}: method {m.name} learns from {m.feedback} feedback, but this "
                              f"table holds {kind} feedback (prepare.feedback); {kind} methods: "
                              f"{', '.join(methods_for(kind))}")
