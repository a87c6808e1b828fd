"""CLI commands of the fit stage (registered by rmpipe/cli.py): ``fit``."""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import typer

from pipeline.checks import SettingError
from pipeline.config import DEFAULT_PARAMS
from pipeline.errors import RmpipeError
from pipeline.options import (DataDir, Dataset, HeadsDir, MethodName, ParamsFile, Progress, ReportsDir, StoreDir,
                              flag_error, load, method_option)


def fit(
    backbone: str = typer.Option(..., help="backbone name (params.yaml backbones:)"),
    method: Optional[List[MethodName]] = method_option("methods to fit, repeatable"),
    all_methods: bool = typer.Option(False, "--all", help="every method in fit.methods"),
    plain: bool = typer.Option(False, "--plain", help="train the plain (unguarded) risk instead of the non-negative one"),
    seed: Optional[int] = typer.Option(None, help="head seed (overrides fit.head.seed)"),
    params: ParamsFile = DEFAULT_PARAMS,
    dataset: Dataset = None,
    progress: Progress = True,
    data_dir: DataDir = None,
    store_dir: StoreDir = None,
    heads_dir: HeadsDir = None,
    reports_dir: ReportsDir = None,
) -> None:
    """Fit the nuisance models and a reward head per method on cached embeddings
    (cache/heads/<backbone>/<dataset>/<method>/)."""
    from stages.fit.run import fit as run_fit

    if bool(method) == all_methods:
        raise RmpipeError("give --method M (repeatable) or --all, not both and not neither")
    p = load(params, dataset=dataset, data_dir=data_dir, store_dir=store_dir, heads_dir=heads_dir,
             reports_dir=reports_dir)
    fp = p.fit
    try:
        if plain:
            fp = dataclasses.replace(fp, guard=dataclasses.replace(fp.guard, nonnegative=False))
        if seed is not None:
            fp = dataclasses.replace(fp, head=dataclasses.replace(fp.head, seed=seed))
    except SettingError as exc:
        raise flag_error(params, exc) from None
    p = dataclasses.replace(p, fit=fp)
    heads = run_fit(p, backbone, None if all_methods else [m.value for m in method], progress=progress)
    for name, folder in heads.items():
        typer.echo(f"{name}: {folder}")


COMMANDS: list = [fit]
