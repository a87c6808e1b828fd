"""CLI commands of the evaluate stage (registered by rmpipe/cli.py)."""

from __future__ import annotations

from typing import List, Optional

import typer

from pipeline.config import DEFAULT_PARAMS
from pipeline.options import DataDir, Dataset, HeadsDir, MethodName, ParamsFile, ReportsDir, StoreDir, load, method_option


def evaluate(
    backbone: str = typer.Option(..., help="backbone name (params.yaml backbones:)"),
    method: Optional[List[MethodName]] = method_option("methods to evaluate (default: every fitted one)"),
    params: ParamsFile = DEFAULT_PARAMS,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    store_dir: StoreDir = None,
    heads_dir: HeadsDir = None,
    reports_dir: ReportsDir = None,
) -> None:
    """Compare fitted heads with clean labels on the test split: R², MAE, RMSE, MSE, AUROC,
    Pearson, pairwise accuracy, Spearman, best-of-N and NDCG within prompts' groups; writes
    reports/<dataset>/<backbone>/ and plots."""
    from stages.evaluate.run import evaluate as run_evaluate, format_table

    p = load(params, dataset=dataset, data_dir=data_dir, store_dir=store_dir, heads_dir=heads_dir,
             reports_dir=reports_dir)
    reports = run_evaluate(p, backbone, [m.value for m in method] if method else None, log=lambda _: None)
    typer.echo(format_table(reports))


def report(
    params: ParamsFile = DEFAULT_PARAMS,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    store_dir: StoreDir = None,
    heads_dir: HeadsDir = None,
    reports_dir: ReportsDir = None,
) -> None:
    """Gather every backbone's evaluation into reports/<dataset>.md and reports/<dataset>.png."""
    from stages.evaluate.report import report as run_report

    p = load(params, dataset=dataset, data_dir=data_dir, store_dir=store_dir, heads_dir=heads_dir,
             reports_dir=reports_dir)
    typer.echo(f"report -> {run_report(p)}")


COMMANDS: list = [evaluate, report]
