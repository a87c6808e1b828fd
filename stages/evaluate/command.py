"""CLI commands of the evaluate stage (registered by rmpipe/cli.py)."""

from __future__ import annotations

from typing import List, Optional

import typer

from pipeline.options import MethodName, Run, method_option, with_common_flags


@with_common_flags
def evaluate(
    run: Run,
    backbone: str = typer.Option(..., help="backbone name (params.yaml backbones:)"),
    method: Optional[List[MethodName]] = method_option("methods to evaluate (default: every fitted one)"),
) -> None:
    """Compare fitted heads with clean labels on the test split: R², MAE, RMSE, MSE, AUROC,
    Pearson, pairwise accuracy, Spearman, best-of-N and NDCG within prompts' groups; writes
    reports/<dataset>/<backbone>/ and plots."""
    from stages.evaluate.run import evaluate as run_evaluate, format_table

    p = run.params
    reports = run_evaluate(p, backbone, [m.value for m in method] if method else None, log=lambda _: None)
    typer.echo(format_table(reports))


@with_common_flags
def report(
    run: Run,
) -> None:
    """Gather every backbone's evaluation into reports/<dataset>.md and reports/<dataset>.png."""
    from stages.evaluate.report import report as run_report

    p = run.params
    typer.echo(f"report -> {run_report(p)}")


COMMANDS: list = [evaluate, report]
