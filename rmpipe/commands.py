"""CLI commands of the application layer (registered by the CLI): ``score``, ``export``,
``serve`` and ``rerank``. Their implementations are imported inside each command, so
``rmpipe --help`` and the stage commands don't pay for polars, transformers or fastapi."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.options import Progress, Run, with_common_flags


@with_common_flags
def score(
    run: Run,
    head: Path = typer.Option(..., help="a head folder (cache/heads/<backbone>/<dataset>/<method>)"),
    data: Path = typer.Option(..., help="pairs to score: parquet, jsonl or csv with prompt and response"),
    out: Optional[Path] = typer.Option(None, help="where to write rewards (default: <data minus its suffix>.rewards.parquet)"),
    progress: Progress = True,
) -> None:
    """Score prompt-response pairs with a head: embed what the store lacks, then write rewards."""
    from rmpipe.score import score as run_score

    p = run.params
    written, n = run_score(p, head, data, out, progress=progress)
    typer.echo(f"scored {n} pairs -> {written}")


@with_common_flags
def export(
    run: Run,
    head: Path = typer.Option(..., help="a head folder (cache/heads/<backbone>/<dataset>/<method>)"),
    out: Path = typer.Option(..., help="the folder to write (must not exist, or be empty)"),
) -> None:
    """Export a head and its backbone as a Hugging Face reward model (num_labels = 1)."""
    from rmpipe.export import REMOTE_FILE, export as run_export

    p = run.params
    done = run_export(p, head, out)
    if done.kind == "native":
        typer.echo(f"exported {done.folder} as {done.architecture} (num_labels=1, no remote "
                   f"code; also loads as *ForTokenClassification)")
    else:
        typer.echo(f"exported {done.folder} as a trust_remote_code model ({REMOTE_FILE}: "
                   f"{done.why_remote}); load it with trust_remote_code=True")
    typer.echo(f"validation logits: mean {done.mean:.4f}, std {done.std:.4f} over {done.val_rows} "
               f"rows (config.json: mean, std)")


@with_common_flags
def serve(
    run: Run,
    head: Path = typer.Option(..., help="a head folder (cache/heads/<backbone>/<dataset>/<method>)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8000, help="TCP port"),
    max_batch: int = typer.Option(64, help="pairs one micro-batch collects at most"),
    max_wait_ms: float = typer.Option(5.0, help="the longest a free worker waits for the clients it just answered"),
    max_request_pairs: int = typer.Option(1024, help="a request with more pairs is refused (413)"),
    max_body_mb: float = typer.Option(16.0, help="a larger request body is refused (413)"),
    max_pair_chars: int = typer.Option(65536, help="a longer pair (prompt + response characters) is refused (413)"),
    default_system: list[str] = typer.Option([], help="a default system turn to drop from conversations, "
                                                      "as the backbone's template's own is (repeatable)"),
) -> None:
    """Serve a head over HTTP: POST /rewards, POST /get_reward (OpenRLHF), POST /classify (vLLM),
    GET /info, GET /health. See docs/serving.md."""
    from rmpipe.serve import ServeSettings, serve as run_serve

    settings = ServeSettings(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                             max_request_pairs=max_request_pairs, max_body_mb=max_body_mb,
                             max_pair_chars=max_pair_chars, default_systems=tuple(default_system))
    p = run.params
    run_serve(p, head, settings, log=typer.echo)


@with_common_flags
def rerank(
    run: Run,
    head: Path = typer.Option(..., help="a head folder (cache/heads/<backbone>/<dataset>/<method>)"),
    data: Path = typer.Option(..., help="candidates: prompt, response, optional group_id (parquet, jsonl, jsonl.gz, csv)"),
    out: Optional[Path] = typer.Option(None, help="where to write: .parquet, .csv or .jsonl "
                                                  "(default: <data without its suffix>.reranked.parquet)"),
    progress: Progress = True,
) -> None:
    """Best-of-N: order each group's candidates (group_id, else same prompt) by reward, mark the best."""
    from rmpipe.rerank import rerank as run_rerank

    p = run.params
    written, n, groups = run_rerank(p, head, data, out, progress=progress)
    typer.echo(f"reranked {n} candidates in {groups} groups -> {written}")


COMMANDS: list = [score, export, serve, rerank]
