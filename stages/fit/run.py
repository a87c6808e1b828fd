"""The fit stage's entry point: prepared table + embedding store -> one head folder per method.

``rmpipe fit`` and dvc.yaml both call :func:`fit`. The table is read through
:func:`pipeline.table.training_view` (no clean labels, no true propensities), the embeddings of
its train and val rows are loaded once, the nuisance models are fitted once, and each method's
head is trained and written to ``cache/heads/<backbone>/<dataset>/<method>/``.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.config import Params
from pipeline.errors import RmpipeError
from pipeline.heads import EmbeddingRef, HeadCard, Uses, head_dir, save_head
from pipeline.store import EmbeddingStore
from pipeline.store_matrix import in_store_order, streams
from pipeline.table import read_provenance, read_table, training_view


def dataset_licence(params: Params) -> str | None:
    """The licence the prepare stage recorded beside the table, if any."""
    return read_provenance(params.table_path).licence


def feedback_kind(params: Params) -> str:
    """The table's feedback kind as its provenance records it; refuse a table prepared as
    another kind than params declare."""
    kind = read_provenance(params.table_path).feedback_kind
    if kind != params.prepare.feedback:
        raise RmpipeError(f"{params.table_path}: the table holds {kind} feedback but params declare "
                          f"prepare.feedback: {params.prepare.feedback}; re-run `rmpipe prepare` or fix params")
    return kind


def load_inputs(params: Params, backbone: str):
    """``(FitInputs, store)`` for the train and val rows of the prepared table."""
    import polars as pl

    from stages.fit.core import FitInputs

    path = params.table_path
    kind = feedback_kind(params)
    df = training_view(read_table(path))
    df = df.filter(pl.col("split").is_in(["train", "val"]))
    if df.height == 0:
        raise RmpipeError(f"{path}: no train or val rows")
    store = EmbeddingStore(params.store_path(backbone))
    if streams(store, df.height, params.fit.stream_gb):  # docs/scale.md: a store beyond memory
        order, X = in_store_order(store, df["pair_id"])
        df = df[order]  # store order: a slice of rows is a shard or two
    else:
        X = store.read(df["pair_id"].to_list())
    ids = df["pair_id"]  # a Series: 10M pair ids as Python strings would be a gigabyte
    columns = {c: df[c].to_numpy() for c in params.fit.row_columns if c in df.columns}
    logged = df["propensity_logged"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    data = FitInputs(X=X, split=df["split"].to_numpy(), observed=df["observed"].to_numpy(),
                     feedback=df["feedback"].fill_null(0).to_numpy(), columns=columns,
                     propensity_logged=logged, ids=ids, where=str(path), kind=kind,
                     audit=df["audit"].fill_null(False).to_numpy() if kind == "explicit" else None)
    return data, store


def _jsonable_params(params: Params) -> dict:
    return {"dataset": params.dataset, "fit": dataclasses.asdict(params.fit)}


def make_card(params: Params, backbone: str, store: EmbeddingStore, method, data, nuisance,
              result) -> HeadCard:
    """The card of one fitted head (``save_head`` adds the architecture, nuisance files,
    package versions and checksums)."""
    from stages.fit.core import imputation_target

    return HeadCard(
        backbone=backbone,
        embedding=EmbeddingRef(spec_hash=store.spec_hash, dim=store.dim, store=str(store.root)),
        dataset=params.dataset,
        licence=dataset_licence(params),
        feedback=data.kind,  # explicit | implicit (prepare.feedback)
        method=method.name,
        method_doc=" ".join((type(method).__doc__ or "").split()),
        uses=Uses(propensity=method.needs_propensity, noise_rates=method.needs_rates,
                  imputation=method.needs_imputation),
        imputation_target=imputation_target(method, params.fit.imputation.target),
        params=_jsonable_params(params),
        rows={"train": int(data.train.sum()), "val": int(data.val.sum()),
              "train_observed": int((data.train & data.observed).sum()),
              "val_observed": int((data.val & data.observed).sum()),
              **({"train_audit": int((data.train & data.audit).sum()), "val_audit": int((data.val & data.audit).sum())}
                 if data.audit is not None else {})},
        diagnostics=nuisance.diagnostics,  # shared by every method of the run
        guard=result.guard | ({"fixed_by_method": method.guard} if method.guard else {}),
        runaway=result.runaway,
        training={"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                  "stopped": result.stopped, "seconds_per_epoch": result.seconds_per_epoch,
                  "curve": result.curve,
                  "stopped_on": "val audit rows" if params.fit.audit.select else "the method's own val risk",
                  "calibration": result.calibration},
        metrics={"val_guarded_risk": result.best_val_risk, "val_audit_risk": result.val_audit_risk,
                 "val_plain_risk": result.curve[result.best_epoch - 1]["val_plain_risk"]},
    )


def summary_line(name: str, result) -> str:
    run = result.runaway
    flag = f", RUNAWAY from epoch {run['first_epoch']}" if run["detected"] else ""
    audit = f", audit risk {result.val_audit_risk:.4f}" if result.val_audit_risk is not None else ""
    return (f"  {name:12s} val risk {result.best_val_risk:.4f} at epoch {result.best_epoch}/"
            f"{result.epochs_run} ({result.stopped}), guard {result.guard['mode']} "
            f"fired {result.guard['fired_share']:.0%}{audit}{flag}")


def nuisance_lines(diag: dict) -> list[str]:
    lines = []
    if "propensity" in diag:
        p = diag["propensity"]
        auc = f"{p['auc']:.3f}" if p["auc"] is not None else "n/a"
        lines.append(f"  propensity ({p['source']}): AUC {auc}, Brier {p['brier']:.4f}, ECE {p['ece']:.4f}, "
                     f"clipped {p['share_clipped']:.1%}, ESS {p['ess']:.0f} "
                     f"({p['ess_share_of_observed']:.0%} of observed)")
    if "pu" in diag:
        for key in ("c", "prior", "misclick"):
            if key in diag["pu"]:
                lines.append(f"  {key} {diag['pu'][key]['value']:.4f} ({diag['pu'][key]['source']})")
        if "labelling" in diag["pu"]:
            e = diag["pu"]["labelling"]
            lines.append(f"  labelling propensity e(x) from {e['source']}: mean {e['mean']:.4f}, "
                         f"clipped {e['share_clipped']:.1%}")
    if "audit_propensity" in diag:
        a = diag["audit_propensity"]
        g = a["global"]
        lines.append(f"  audit propensity ({a['strata']}, {a['k']} strata, audit answers {a['labels']}): "
                     f"{a['audit_rows_train']} train / {a['audit_rows_val']} val audit rows; global "
                     f"π(·,1) {g['pi1']:.3f}, π(·,0) {g['pi0']:.3f}")
    if "label_selection" in diag and diag["label_selection"]["z"] is not None:
        c = diag["label_selection"]
        lines.append(f"  label selection check: observed {c['observed_positive']:.1%} positive, audit "
                     f"{c['audit_positive']:.1%} (z {c['z']:+.1f}){' — users chose by the label' if c['flag'] else ''}"
                     + (f"; {sum(t['flag'] for t in c['strata'])} of {len(c['strata'])} strata flagged"
                        if c.get("strata") else ""))
    if "noise" in diag:
        n = diag["noise"]
        lines.append(f"  noise rates ({n['source']}): rho_pos {n['rho_pos']:.3f}, rho_neg {n['rho_neg']:.3f}, "
                     f"d {n['d']:.3f}")
    return lines


def fit(params: Params, backbone: str, methods: Sequence[str] | None = None, *,
        dataset: str | None = None, progress: bool = True, log=None) -> dict[str, Path]:
    """Fit one head per method on ``backbone``'s embeddings of ``params.dataset``'s table; return
    ``{method: head folder}``. The nuisance models are fitted once and shared by the methods."""
    import torch

    from stages.fit.core import fit_method, fit_nuisance
    from stages.fit.methods import check_kind, get_method

    log = log or (lambda line: print(line, file=sys.stderr))
    if dataset:
        params = dataclasses.replace(params, dataset=dataset)
    chosen = [get_method(m) for m in (methods or params.fit.methods)]
    if not chosen:
        raise RmpipeError("no methods to fit (fit.methods is empty)")
    check_kind(chosen, feedback_kind(params), f"{params.table_path}")
    if params.fit.head.threads:
        torch.set_num_threads(params.fit.head.threads)
    data, store = load_inputs(params, backbone)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nuisance = fit_nuisance(data, params.fit, chosen)
    for w in caught:
        if issubclass(w.category, UserWarning):
            log(f"rmpipe: warning: {w.message}")
    seen = f"{int(data.feedback[data.train].sum())} acted on" if data.kind == "implicit" \
        else f"{int((data.train & data.observed).sum())} observed"
    streamed = ""
    if not isinstance(data.X, np.ndarray):
        projected = nuisance.features is not None and nuisance.features.pca_ is not None
        streamed = (f", streamed from the store ({len(data.X) * store.dim * 4 / 2**30:.1f} GiB as float32, "
                    f"above fit.stream_gb {params.fit.stream_gb:g}"
                    + (f"; nuisance features projected to {nuisance.features.pca_dim} dims)" if projected else ")"))
    log(f"fit {backbone} on {params.dataset} ({data.kind} feedback): {int(data.train.sum())} train rows "
        f"({seen}), {int(data.val.sum())} val rows, dim {store.dim}{streamed}")
    for line in nuisance_lines(nuisance.diagnostics):
        log(line)
    out, audit_risks = {}, {}
    for method in chosen:
        model, result = fit_method(data, nuisance, method, params.fit, progress=progress)
        card = make_card(params, backbone, store, method, data, nuisance, result)
        folder = head_dir(params.fit.heads_dir, backbone, params.dataset, method.name)
        out[method.name] = save_head(folder, model, card, nuisance)
        log(summary_line(method.name, result))
        if result.val_audit_risk is not None:
            audit_risks[method.name] = result.val_audit_risk
    if len(audit_risks) > 1:
        best = min(audit_risks, key=audit_risks.get)
        log(f"  audit choice: {best} (lowest risk on the val audit rows, {audit_risks[best]:.4f}; "
            + ", ".join(f"{k} {v:.4f}" for k, v in audit_risks.items() if k != best) + ")")
    return out
