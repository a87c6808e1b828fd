"""CLI commands of the evaluate stage (registered by rmpipe/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def evaluate(
    backbone: str = typer.Option(..., help="backbone name (params.yaml backbones:)"),
    method: Optional[List[str]] = typer.Option(None, help="methods to evaluate (default: every fitted one)"),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="settings file"),
    dataset: Optional[str] = typer.Option(None, help="data/prepared/<dataset>/ (overrides params)"),
) -> None:
    """Compare fitted heads with clean labels on the test split: R², MAE, RMSE, MSE, AUROC,
    Pearson, pairwise accuracy, Spearman, best-of-N and NDCG within prompts' groups; writes
    reports/<dataset>/<backbone>/ and plots."""
    from pipeline.config import load_params
    from stages.evaluate.run import evaluate as run_evaluate, format_table

    reports = run_evaluate(load_params(params), backbone, method or None, dataset=dataset, log=lambda _: None)
    typer.echo(format_table(reports))


def report(
    params: Path = typer.Option(Path("params.yaml"), "--params", help="settings file"),
    dataset: Optional[str] = typer.Option(None, help="data/prepared/<dataset>/ (overrides params)"),
) -> None:
    """Gather every backbone's evaluation into reports/<dataset>.md and reports/<dataset>.png."""
    import dataclasses

    from pipeline.config import load_params
    from stages.evaluate.report import report as run_report

    p = load_params(params)
    if dataset:
        p = dataclasses.replace(p, dataset=dataset)
    typer.echo(f"report -> {run_report(p)}")


COMMANDS: list = [evaluate, report]
