"""Implicit feedback (docs/method.md, "Implicit feedback (positive-unlabelled)"): each row is an
impression and ``feedback`` says whether the user acted (1: clicked, copied) or not (0). A 0 is
not a "no": it is unlabelled. ``observed`` carries no information (every row is an impression,
so it is true everywhere); ``propensity_logged``, where present, is the *labelling* propensity
``e(x) = P(a = 1 | y = 1, x)``.

Simulation (the reference's PU protocol, drawn by :mod:`pipeline.simulation`): the explicit
protocol's propensity ``p = α^(5 − s')`` scaled to the target rate, then ``a = y · Bernoulli(p)``,
and, if asked, mis-clicks ``a = 1`` with ``rho_neg`` on ``y = 0`` rows. The realised rates go
beside the requested ones: the share of positives acted on, the mis-click rate, the class prior ``π`` and
the labelling frequency ``c = P(a = 1 | y = 1)``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.config import ImplicitSimParams
from pipeline.errors import RmpipeError
from pipeline.simulation import Simulator, implicit_rates, rating_info, threshold

IMPLICIT_HINT = ("if these are clicks or copies (no recorded negatives), set prepare.feedback: "
                 "implicit (positive-unlabelled mode)")
TEST_NOTE = "test rows are clean: feedback = label (evaluation only)"


def simulate_table(df: pl.DataFrame, sim: Simulator, ip: ImplicitSimParams, scale, where: str
                   ) -> tuple[pl.DataFrame, dict]:
    """Implicit feedback on the train and val rows; test rows stay clean (feedback = label)."""
    rating = df["rating"].to_numpy()
    if df["rating"].null_count() or np.isnan(rating).any():
        raise RmpipeError(f"{where}: column rating: missing or NaN ratings cannot be simulated")
    is_test = (df["split"] == "test").to_numpy()
    n = df.height
    feedback, label = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int8)
    propensity = np.full(n, np.nan)
    drawn = sim.simulate_implicit(ip, rating[~is_test], scale, levels=rating)
    feedback[~is_test], label[~is_test], propensity[~is_test] = drawn.acted, drawn.label, drawn.propensity
    label[is_test] = (rating[is_test] > threshold(rating)).astype(np.int8)
    feedback[is_test] = label[is_test]
    df = df.with_columns(
        pl.Series("observed", np.ones(n, dtype=bool)),
        pl.Series("feedback", feedback, dtype=pl.Int8),
        pl.Series("label", label, dtype=pl.Int8),
        pl.Series("propensity_true", propensity, dtype=pl.Float64).fill_nan(None),
    )
    if ip.log_propensity:
        df = df.with_columns(pl.col("propensity_true").alias("propensity_logged"))
    by_split = {}
    for name in ("train", "val"):
        m = (df["split"] == name).to_numpy()
        by_split[name] = implicit_rates(feedback[m], label[m], propensity[m])
    info = {
        "simulated": True, "kind": "implicit",
        "requested": {"alpha": sim.params.alpha, "target_rate": sim.params.target_rate,
                      "shape": sim.params.shape, "seed": sim.params.seed, "rho_neg": ip.rho_neg, "log_propensity": ip.log_propensity,
                      "unused": "prepare.simulate.rho_pos and rho_neg (explicit noise) are not used: "
                                "the labelling propensity takes rho_pos's place, mis-clicks are "
                                "prepare.simulate.implicit.rho_neg"},
        "realised": drawn.realised() | {"over": "train + val rows"},
        "realised_by_split": by_split,
        "propensity": "propensity_true is the labelling propensity e(x) = P(a = 1 | y = 1, x)"
                      + ("; written as propensity_logged too" if ip.log_propensity else ""),
        **rating_info(rating, scale),
        "test": TEST_NOTE,
    }
    return df, info


def check_logged(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """A user's implicit log: ``feedback`` 0/1 on every row (refused by row otherwise), at least
    one 1; ``observed`` is set true everywhere (an ``observed`` column of theirs is not used)."""
    from pipeline.table import _refuse_rows

    if "feedback" not in df.columns:
        raise RmpipeError(f"{where}: implicit mode needs a feedback column (1 where the user acted, "
                          "0 otherwise; map yours with prepare.source.columns.feedback)")
    fb = df["feedback"]
    if fb.dtype == pl.Boolean:
        fb = fb.cast(pl.Int8)
    elif fb.dtype.is_float():
        fb = fb.fill_nan(None)
        if (fb.drop_nulls() == fb.drop_nulls().round()).all():
            fb = fb.cast(pl.Int64)
    if not (fb.dtype.is_integer() or fb.dtype == pl.Null):
        raise RmpipeError(f"{where}: column feedback has type {fb.dtype}, expected 0/1 integers")
    _refuse_rows(fb.is_null(), where, "feedback",
                 "missing value (implicit mode: 1 where the user acted, 0 otherwise, on every row)")
    _refuse_rows(~fb.is_in([0, 1]), where, "feedback", "feedback outside {0, 1}")
    if int(fb.sum()) == 0:
        raise RmpipeError(f"{where}: column feedback: no row has feedback 1 (nothing was acted on): "
                          "implicit mode learns from the rows users acted on")
    return df.with_columns(fb.cast(pl.Int8).alias("feedback"),
                           pl.repeat(True, df.height, eager=True).alias("observed"))


def logged_info(df: pl.DataFrame) -> dict:
    """The sidecar's feedback block for a user's implicit log."""
    lab = df["label"].to_numpy() if "label" in df.columns and df["label"].null_count() == 0 else None
    return {"simulated": False, "kind": "implicit", "from": "the logs",
            "realised": implicit_rates(df["feedback"].to_numpy(), lab),
            "observed": "not used in implicit mode (every row is an impression)"}
