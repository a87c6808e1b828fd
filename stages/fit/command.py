"""CLI commands of the fit stage (registered by rmpipe/cli.py): ``fit``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from pipeline.errors import RmpipeError


def fit(
    backbone: str = typer.Option(..., help="backbone name (params.yaml backbones:)"),
    method: Optional[List[str]] = typer.Option(None, help="explicit: naive | ips | dr | noise | causalrm | causalrm_dr; implicit: pu_naive | scar | upu | nnpu | sar | sar_noise (repeatable)"),
    all_methods: bool = typer.Option(False, "--all", help="every method in fit.methods"),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="settings file"),
    dataset: Optional[str] = typer.Option(None, help="data/prepared/<dataset>/ (overrides params)"),
    plain: bool = typer.Option(False, "--plain", help="train the plain (unguarded) risk instead of the non-negative one"),
    seed: Optional[int] = typer.Option(None, help="head seed (overrides fit.head.seed)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fit the nuisance models and a reward head per method on cached embeddings
    (cache/heads/<backbone>/<dataset>/<method>/)."""
    from pipeline.config import load_params
    from stages.fit.run import fit as run_fit

    if bool(method) == all_methods:
        raise RmpipeError("give --method M (repeatable) or --all, not both and not neither")
    p = load_params(params)
    fp = p.fit
    if plain:
        fp = dataclasses.replace(fp, guard=dataclasses.replace(fp.guard, nonnegative=False))
    if seed is not None:
        fp = dataclasses.replace(fp, head=dataclasses.replace(fp.head, seed=seed))
    p = dataclasses.replace(p, fit=fp, **({"dataset": dataset} if dataset else {}))
    heads = run_fit(p, backbone, None if all_methods else list(method), progress=progress)
    for name, folder in heads.items():
        typer.echo(f"{name}: {folder}")


COMMANDS: list = [fit]
