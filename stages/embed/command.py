"""CLI commands of the embed stage (registered by rmpipe/cli.py): ``rmpipe embed`` and
``rmpipe cache ls|verify|merge``. Heavy imports stay inside the functions so that
``rmpipe --help`` is instant."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.config import DEFAULT_PARAMS
from pipeline.options import DataDir, Dataset, HeadsDir, ParamsFile, Progress, ReportsDir, StoreDir, load


def embed(
    backbone: Optional[str] = typer.Option(None, help="Backbone name from params.yaml (default: each of embed.backbones)."),
    shard: Optional[str] = typer.Option(None, help="i/n: embed only the i-th of n hash-partitions (0-based)."),
    rebuild: bool = typer.Option(False, help="Delete a store built by another embedding function."),
    params: ParamsFile = DEFAULT_PARAMS,
    dataset: Dataset = None,
    progress: Progress = True,
    data_dir: DataDir = None,
    store_dir: StoreDir = None,
    heads_dir: HeadsDir = None,
    reports_dir: ReportsDir = None,
) -> None:
    """Embed the dataset's prompt-response pairs with a backbone into its store (only missing pairs)."""
    from stages.embed.run import embed as run_embed

    p = load(params, dataset=dataset, data_dir=data_dir, store_dir=store_dir, heads_dir=heads_dir,
             reports_dir=reports_dir)
    for name in [backbone] if backbone else p.embed.backbones:
        typer.echo(run_embed(p, name, shard=shard, rebuild=rebuild, progress=progress).line())


cache_app = typer.Typer(help="Inspect and maintain the embedding stores.", no_args_is_help=True)


@cache_app.command("ls")
def cache_ls(params: ParamsFile = DEFAULT_PARAMS, store_dir: StoreDir = None) -> None:
    """List embedding stores: backbone, dimension, rows, size on disk, key."""
    from pipeline.store import list_stores

    stores = list_stores(load(params, store_dir=store_dir).embed.store_dir)
    if not stores:
        typer.echo("no embedding stores yet (run `rmpipe embed`)")
        return
    typer.echo(f"{'backbone':<22}{'dim':>6}{'rows':>10}{'size':>11}{'shards':>8}  key")
    for s in stores:
        m = s.manifest
        typer.echo(f"{m['backbone']:<22}{m['dim']:>6}{s.rows:>10}{_size(s.disk_bytes()):>11}"
                   f"{len(m['shards']):>8}  {m['spec_hash']}")


@cache_app.command("verify")
def cache_verify(
    backbone: Optional[str] = typer.Argument(None, help="One store (default: all)."),
    repair: bool = typer.Option(False, help="Drop bad shards so `rmpipe embed` recomputes their rows."),
    params: ParamsFile = DEFAULT_PARAMS,
    store_dir: StoreDir = None,
) -> None:
    """Check every shard against its manifest (size, checksum, rows); name any bad one."""
    from pipeline.store import list_stores

    stores = [s for s in list_stores(load(params, store_dir=store_dir).embed.store_dir)
              if backbone is None or s.root.name == backbone]
    for s in stores:
        if repair:
            dropped = s.repair()
            typer.echo(f"{s.root}: " + (f"dropped {', '.join(dropped)}" if dropped else "ok"))
            continue
        s.verify()  # raises, naming the bad shard
        typer.echo(f"{s.root}: ok ({s.rows} rows)")


@cache_app.command("merge")
def cache_merge(
    source: Path = typer.Argument(..., help="A store filled elsewhere (e.g. another machine's --shard run)."),
    target: Path = typer.Argument(..., help="The store to add its missing rows to."),
) -> None:
    """Merge one store into another built by the same embedding function."""
    from pipeline.store import EmbeddingStore

    added = EmbeddingStore(target).merge_from(EmbeddingStore(source))
    typer.echo(f"{target}: {added} rows added from {source}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


COMMANDS: list = [embed]
GROUPS = {"cache": cache_app}
