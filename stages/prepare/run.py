"""The prepare stage's entry point: source -> splits -> simulated (or logged) feedback ->
``data/prepared/<dataset>/feedback.parquet`` + ``provenance.json`` beside it (source, licence,
feedback kind, and the simulation's requested and realised rates when one ran).

``rmpipe prepare`` and dvc.yaml both call :func:`prepare`. Everything is computed and validated
in memory first; the two files are then renamed into place together, so an error leaves
nothing half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.atomic import atomic_path
from pipeline.config import Params
from pipeline.errors import RmpipeError
from pipeline.simulation import Simulator, rating_info, realised_rates, threshold
from pipeline.table import (OLD_PROVENANCE, TEXT_FORM, Provenance, _refuse_rows, normal_text, pair_ids,
                            provenance_path, validate)
from stages.prepare import implicit
from stages.prepare.rows import Loaded, group_key
from stages.prepare.sources import load_source
from stages.prepare.splits import assign_splits, straddling

TEST_NOTE = "test rows are clean and fully observed: observed = true, feedback = label"


@dataclass(frozen=True)
class Prepared:
    table: pl.DataFrame
    report: dict
    table_path: Path
    provenance_path: Path


def build(params: Params, where: str = "params.yaml") -> tuple[pl.DataFrame, dict]:
    """The feedback table and its report, in memory (nothing is written)."""
    pp = params.prepare
    sim = Simulator(pp.simulate)
    fractions = pp.split.fractions
    loaded = load_source(pp.source, where, params.fit.row_columns, pp.feedback, pp.split)
    df, dropped = loaded.frame, dict(loaded.dropped)
    if df.height == 0:
        raise RmpipeError(f"{loaded.where}: the source yielded no rows (dropped: {dropped or 'none'})")
    df, normalised = normal_form(df)

    source_split = None
    if "source_split" in df.columns:
        test_groups = df.filter(pl.col("source_split") == "test")["group_id"].unique()
        leak = (pl.col("source_split") != "test") & pl.col("group_id").is_in(test_groups.implode())
        n_leak = int(df.select(leak.sum()).item())
        if n_leak:
            dropped["train row whose prompt is also in the source's test split"] = n_leak
            df = df.filter(~leak)
        source_split = df["source_split"].to_numpy()
    if "given_split" in df.columns:
        split = df["given_split"].to_numpy()
    else:
        split = assign_splits(df["group_id"].to_numpy(), source_split, fractions,
                              pp.split.val_share, pp.split.seed)
    df = df.with_columns(pl.Series("split", split, dtype=pl.String))
    empty = [name for name in ("train", "val", "test") if not (split == name).any()]
    if empty and "given_split" not in df.columns:
        groups = df["group_id"].n_unique()
        raise RmpipeError(
            f"{loaded.where}: splitting by prompt leaves {' and '.join(empty)} empty: the {df.height} "
            f"rows hold {groups} prompt(s) (group_id), and every response to one prompt stays in one "
            f"split, so fit and evaluate would have nothing to check against; add prompts, or give "
            f"the rows a split column")
    if empty:
        loaded.hints.append(f"{loaded.where}: your split column leaves {' and '.join(empty)} empty")
    if "pair_id" not in df.columns:
        df = df.with_columns(pl.Series("pair_id", pair_ids(df["prompt"].to_list(), df["response"].to_list())))

    report = {
        "dataset": params.dataset, "source": loaded.name, "read_from": loaded.where,
        "licence": loaded.licence, "rating": loaded.rating_note, "dropped": dropped,
        "feedback_kind": pp.feedback,
        "dropped_total": int(sum(dropped.values())),
        "text": {"unicode_form": TEXT_FORM, "cells_normalised": normalised},
        "split": {"seed": pp.split.seed, "fractions": list(fractions), "val_share": pp.split.val_share,
                  "by": "group_id (prompt)",
                  "source_test_split": source_split is not None},
    }
    if loaded.logged and pp.feedback == "implicit":
        report["feedback"] = implicit.logged_info(df)
    elif loaded.logged:
        lab = df["label"].to_numpy() if "label" in df.columns and df["label"].null_count() == 0 else None
        report["feedback"] = {"simulated": False, "from": "the logs", "realised": realised_rates(
            df["observed"].to_numpy(), df["feedback"].fill_null(-1).to_numpy(), lab)}
        if "audit" in df.columns and df["audit"].fill_null(False).any():
            fb = df["feedback"].fill_null(0).to_numpy()
            report["feedback"]["audit"] = audit_info(
                df["audit"].fill_null(False).to_numpy(), split == "test", split, fb,
                df["label"].fill_null(-1).to_numpy() if "label" in df.columns else None, "as logged")
    elif not pp.simulate.enabled:
        raise RmpipeError(f"{where}: prepare.simulate.enabled is false but {loaded.name} has no "
                          "logged observed/feedback columns; enable simulation or map them")
    elif pp.feedback == "implicit":
        _keep_users_label(df, loaded.where)
        df, report["feedback"] = implicit.simulate_table(df, sim, pp.simulate.implicit, loaded.scale, loaded.where)
    else:
        _keep_users_label(df, loaded.where)
        df, report["feedback"] = _simulate(df, sim, loaded)
    if loaded.hints:
        report["hints"] = list(loaded.hints)
    df = validate(df, where=f"{loaded.name} (prepared)")
    report["rows"] = _counts(df)
    report["straddling_groups"] = straddling(df["group_id"].to_list(), df["split"].to_list())
    report["straddling_prompts"] = straddling(df["prompt"].to_list(), df["split"].to_list())
    return df, report


def normal_form(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Prompts and responses in :data:`pipeline.table.TEXT_FORM`, before splits and pair ids;
    a ``group_id`` or ``pair_id`` the source derived from the old text is derived again (one the
    user gave is theirs, and is checked against the new text). Returns the cells changed per
    column, for the provenance."""
    changed = {}
    new = {}
    for name in ("prompt", "response"):
        new[name], changed[name] = normal_text(df[name])
    if not any(changed.values()):
        return df, changed
    old_prompt = df["prompt"]
    out = df.with_columns(new["prompt"], new["response"])
    if "group_id" in df.columns:
        derived = df["group_id"] == old_prompt.map_elements(group_key, return_dtype=pl.String)
        regrouped = new["prompt"].map_elements(group_key, return_dtype=pl.String)
        out = out.with_columns(pl.when(derived).then(regrouped).otherwise(df["group_id"]).alias("group_id"))
    if "pair_id" in df.columns:
        derived = df["pair_id"] == pl.Series(pair_ids(old_prompt.to_list(), df["response"].to_list()))
        fresh = pl.Series(pair_ids(new["prompt"].to_list(), new["response"].to_list()))
        out = out.with_columns(pl.when(derived).then(fresh).otherwise(df["pair_id"]).alias("pair_id"))
    return out, changed


def _keep_users_label(df: pl.DataFrame, where: str) -> None:
    """A user's clean label is theirs: refuse (naming the first row) a simulation that would
    write another label over it (the simulation's is ``rating > median of the rating levels``)."""
    if "label" not in df.columns or df["label"].null_count() == df.height or "rating" not in df.columns:
        return
    if df["rating"].null_count() or df["rating"].is_nan().any():
        return  # the simulation refuses these by name
    rating = df["rating"].to_numpy()
    derived = pl.Series((rating > threshold(rating)).astype(np.int8))
    _refuse_rows(df["label"].is_not_null() & (df["label"].cast(pl.Int8) != derived), where, "label",
                 "your label disagrees with the one simulated from column rating (rating > "
                 f"{threshold(rating):g}); drop one of label and rating")


def _simulate(df: pl.DataFrame, sim: Simulator, loaded: Loaded) -> tuple[pl.DataFrame, dict]:
    """docs/method.md's protocol on the train and val rows; test rows stay clean."""
    rating = df["rating"].to_numpy()
    if df["rating"].null_count() or np.isnan(rating).any():
        raise RmpipeError(f"{loaded.where}: column rating: missing or NaN ratings cannot be simulated")
    is_test = (df["split"] == "test").to_numpy()
    n = df.height
    observed, feedback = np.ones(n, dtype=bool), np.zeros(n, dtype=np.int8)
    propensity, label = np.full(n, np.nan), np.zeros(n, dtype=np.int8)
    drawn = sim.simulate(rating[~is_test], loaded.scale, levels=rating)
    observed[~is_test], feedback[~is_test] = drawn.observed, drawn.feedback
    propensity[~is_test], label[~is_test] = drawn.propensity, drawn.label
    label[is_test] = (rating[is_test] > threshold(rating)).astype(np.int8)
    feedback[is_test] = label[is_test]
    audit = np.zeros(n, dtype=bool)
    if sim.params.audit_share > 0:
        rows, answers = sim.draw_audit(drawn.label)
        idx = np.flatnonzero(~is_test)[rows]
        audit[idx], observed[idx], feedback[idx] = True, True, answers[rows]
    df = df.with_columns(
        pl.Series("observed", observed),
        pl.Series("feedback", feedback, dtype=pl.Int8),
        pl.Series("label", label, dtype=pl.Int8),
        pl.Series("propensity_true", propensity, dtype=pl.Float64).fill_nan(None),
        pl.Series("audit", audit),
    ).with_columns(pl.when(pl.col("observed")).then(pl.col("feedback")).otherwise(None).alias("feedback"))
    by_split = {}
    for name in ("train", "val"):
        m = (df["split"] == name).to_numpy() & ~audit  # the self-selected feedback
        by_split[name] = realised_rates(observed[m], feedback[m], label[m], propensity[m])
    logs = ~is_test & ~audit
    info = {
        "simulated": True,
        "requested": {k: getattr(sim.params, k)
                      for k in ("alpha", "target_rate", "rho_pos", "rho_neg", "shape", "seed",
                                "audit_share", "audit_labels")},
        "realised": realised_rates(observed[logs], feedback[logs], label[logs], propensity[logs])
        | {"over": "train + val rows" + (" outside the audit" if audit.any() else "")},
        "realised_by_split": by_split,
        **rating_info(rating, loaded.scale),
        "test": TEST_NOTE,
    }
    if sim.params.audit_share > 0:
        info["audit"] = audit_info(audit, is_test, df["split"].to_numpy(), feedback, label,
                                   sim.params.audit_labels)
    return df, info


def audit_info(audit, is_test, split, feedback, label, labels: str) -> dict:
    """The realised audit, for provenance.json: its size and share of the non-test rows, per
    split, and its answers' positive share beside the clean one (and the realised flips)."""
    a = audit & ~is_test
    f = feedback[a]
    out = {"rows": int(a.sum()), "share_realised": float(a.sum() / max((~is_test).sum(), 1)),
           "labels": labels, "by_split": {s: int((a & (split == s)).sum()) for s in ("train", "val")},
           "positive_share": float(f.mean()) if a.any() else None}
    if label is not None and a.any() and (label[a] >= 0).all():  # clean labels: simulation only
        out.update(label_positive_share=float(label[a].mean()), flipped=int((f != label[a]).sum()))
    return out


def _counts(df: pl.DataFrame) -> dict:
    out = {"total": df.height}
    for name in ("train", "val", "test"):
        part = df.filter(pl.col("split") == name)
        out[name] = {"rows": part.height, "groups": part["group_id"].n_unique(),
                     "observed": int(part["observed"].sum()),
                     "comparisons": part["comparison_id"].drop_nulls().n_unique()}
    return out


def write(df: pl.DataFrame, report: dict, table: Path) -> None:
    """Both files or neither: each goes to a temporary name, and both are renamed at the end."""
    text = Provenance.from_dict(report).to_json()
    with atomic_path(table) as t_tmp, atomic_path(provenance_path(table)) as j_tmp:
        df.write_parquet(t_tmp)
        j_tmp.write_text(text)
    for old in OLD_PROVENANCE:  # a stale sidecar of an earlier prepare would contradict the new one
        table.with_name(old).unlink(missing_ok=True)


def prepare(params: Params, where: str = "params.yaml") -> Prepared:
    """Build, validate and write the feedback table of ``params.dataset``."""
    df, report = build(params, where)
    write(df, report, params.table_path)
    return Prepared(df, report, params.table_path, provenance_path(params.table_path))


def summary(p: Prepared) -> str:
    """A few lines for the terminal."""
    r = p.report
    rows = r["rows"]
    lines = [f"prepared {r['dataset']}: {rows['total']} rows from {r['source']} -> {p.table_path}",
             "  split    rows  groups  observed",
             *(f"  {s:<6}{rows[s]['rows']:>6}{rows[s]['groups']:>8}{rows[s]['observed']:>10}"
               for s in ("train", "val", "test"))]
    changed = r.get("text", {}).get("cells_normalised", {})
    if any(changed.values()):
        lines.append(f"  text: {changed['prompt']} prompt(s) and {changed['response']} response(s) put in "
                     f"Unicode {r['text']['unicode_form']} (the same text in another form is the same pair)")
    if r["dropped"]:
        lines.append("  dropped: " + "; ".join(f"{k}: {v}" for k, v in sorted(r["dropped"].items())))
    fb = r["feedback"]
    if fb.get("kind") == "implicit":
        z = fb["realised"]
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        line = f"  implicit feedback: acted on {fmt(z['acted_rate'])} of rows"
        if z.get("prior") is not None:
            line += (f"; prior π {fmt(z['prior'])}, positives acted on (c) {fmt(z['positives_acted_on'])}, "
                     f"mis-clicks {fmt(z['misclick_rate'])}")
        lines.append(line + ("" if fb["simulated"] else " (from the logs)"))
    elif fb["simulated"]:
        q, z = fb["requested"], fb["realised"]
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"  observation rate {fmt(z['observation_rate'])} (requested {q['target_rate']}, "
                     f"mean p {fmt(z['mean_propensity'])}); rho_pos {fmt(z['rho_pos'])} (requested "
                     f"{q['rho_pos']}); rho_neg {fmt(z['rho_neg'])} (requested {q['rho_neg']})")
    else:
        lines.append("  feedback from the logs (nothing simulated)")
    lines.append(f"  licence: {r['licence']}; provenance: {p.provenance_path}")
    return "\n".join(lines)
