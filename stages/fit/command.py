"""CLI commands of the fit stage (registered by rmpipe/cli.py): ``fit``."""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import typer

from pipeline.checks import SettingError
from pipeline.errors import RmpipeError
from pipeline.options import MethodName, Progress, Run, method_option, with_common_flags


@with_common_flags
def fit(
    run: Run,
    backbone: str = typer.Option(..., help="backbone name (params.yaml backbones:)"),
    method: Optional[List[MethodName]] = method_option("methods to fit, repeatable"),
    all_methods: bool = typer.Option(False, "--all", help="every method in fit.methods"),
    plain: bool = typer.Option(False, "--plain", help="train the plain (unguarded) risk instead of the non-negative one"),
    seed: Optional[int] = typer.Option(None, help="head seed (overrides fit.head.seed)"),
    progress: Progress = True,
) -> None:
    """Fit the nuisance models and a reward head per method on cached embeddings
    (cache/heads/<backbone>/<dataset>/<method>/)."""
    from stages.fit.run import fit as run_fit

    if bool(method) == all_methods:
        raise RmpipeError("give --method M (repeatable) or --all, not both and not neither")
    p = run.params
    fp = p.fit
    try:
        if plain:
            fp = dataclasses.replace(fp, guard=dataclasses.replace(fp.guard, nonnegative=False))
        if seed is not None:
            fp = dataclasses.replace(fp, head=dataclasses.replace(fp.head, seed=seed))
    except SettingError as exc:
        raise run.error(exc) from None
    p = dataclasses.replace(p, fit=fp)
    heads = run_fit(p, backbone, None if all_methods else [m.value for m in method], progress=progress)
    for name, folder in heads.items():
        typer.echo(f"{name}: {folder}")


COMMANDS: list = [fit]
