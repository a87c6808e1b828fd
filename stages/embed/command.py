"""CLI commands of the embed stage (registered by rmpipe/cli.py): ``rmpipe embed`` and
``rmpipe cache ls|verify|merge``. Heavy imports stay inside the functions so that
``rmpipe --help`` is instant."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.errors import RmpipeError
from pipeline.options import ParamsFile, Progress, Run, StoreDir, load, with_common_flags


@with_common_flags
def embed(
    run: Run,
    backbone: Optional[str] = typer.Option(None, help="Backbone name from params.yaml (default: each of embed.backbones)."),
    shard: Optional[str] = typer.Option(None, help="i/n: embed only the i-th of n hash-partitions (0-based)."),
    rebuild: bool = typer.Option(False, help="Delete a store built by another embedding function; rebuild a lost or damaged manifest from the shards that pass their checks."),
    engine: str = typer.Option("local", help="local: this process; ray: a Ray cluster's actors (needs the ray extra; docs/scale.md)."),
    address: Optional[str] = typer.Option(None, help="--engine ray: the cluster to join (auto: the one `ray start` made here; default: start a local one)."),
    actors: Optional[int] = typer.Option(None, min=1, help="--engine ray: model actors (default: the cluster's GPUs / --gpus-per-actor, or CPUs / --cpus-per-actor)."),
    cpus_per_actor: Optional[float] = typer.Option(None, min=0.01, help="--engine ray: CPUs (and torch threads) per actor (default 1)."),
    gpus_per_actor: Optional[float] = typer.Option(None, min=0, help="--engine ray: GPUs per actor (default 1 where the cluster has GPUs, else 0)."),
    progress: Progress = True,
) -> None:
    """Embed the dataset's prompt-response pairs with a backbone into its store (only missing pairs)."""
    from stages.embed.run import embed as run_embed

    p = run.params
    ray = {k: v for k, v in dict(address=address, actors=actors, cpus_per_actor=cpus_per_actor,
                                 gpus_per_actor=gpus_per_actor).items() if v is not None}
    if ray and engine != "ray":
        raise RmpipeError(f"--{next(iter(ray)).replace('_', '-')} is a setting of --engine ray")
    for name in [backbone] if backbone else p.embed.backbones:
        typer.echo(run_embed(p, name, shard=shard, rebuild=rebuild, progress=progress,
                             engine=engine, ray=ray).line())


cache_app = typer.Typer(help="Inspect and maintain the embedding stores.", no_args_is_help=True)


@cache_app.command("ls")
def cache_ls(params: ParamsFile = None, store_dir: StoreDir = None) -> None:
    """List embedding stores: backbone, dimension, rows, size on disk, key."""
    from pipeline.store import EmbeddingStore, store_folders

    folders = store_folders(load(params, store_dir=store_dir).embed.store_dir)
    if not folders:
        typer.echo("no embedding stores yet (run `rmpipe embed`)")
        return
    typer.echo(f"{'backbone':<22}{'dim':>6}{'rows':>10}{'size':>11}{'shards':>8}  {'key':<17} state")
    for folder in folders:
        try:
            s = EmbeddingStore(folder)
            m = s.manifest
        except RmpipeError:
            typer.echo(f"{folder.name:<22}{'?':>6}{'?':>10}{'?':>11}{'?':>8}  {'?':<17} damaged: "
                       f"manifest unreadable (rmpipe cache verify --repair)")
            continue
        try:
            s.verify()
            state = "ok"
        except RmpipeError as exc:
            state = f"damaged: {exc}"
        typer.echo(f"{m['backbone']:<22}{m['dim']:>6}{s.rows:>10}{_size(s.disk_bytes()):>11}"
                   f"{len(m['shards']):>8}  {m['spec_hash']:<17} {state}")


@cache_app.command("verify")
def cache_verify(
    backbone: Optional[str] = typer.Argument(None, help="One store (default: all)."),
    repair: bool = typer.Option(False, help="Drop bad shards so `rmpipe embed` recomputes their rows; rebuild a lost manifest from the shards."),
    params: ParamsFile = None,
    store_dir: StoreDir = None,
) -> None:
    """Check every shard against its manifest (size, checksum, rows); name any bad one."""
    from pipeline.store import EmbeddingStore, store_folders
    from pipeline.store_repair import repair_store

    store_dir = Path(load(params, store_dir=store_dir).embed.store_dir)
    folders = store_folders(store_dir)
    if backbone is not None:
        folders = [f for f in folders if f.name == backbone]
        if not folders:
            raise RmpipeError(f"{store_dir / backbone}: no embedding store here "
                              f"(run `rmpipe embed --backbone {backbone}` first)")
    if not folders:
        raise RmpipeError(f"{store_dir}: no embedding stores to verify (run `rmpipe embed` first)")
    for folder in folders:
        if repair:
            dropped, notes = repair_store(folder)
            said = ([f"dropped {', '.join(dropped)}"] if dropped else []) + notes
            typer.echo(f"{folder}: " + ("; ".join(said) if said else "ok")
                       + f" ({EmbeddingStore(folder).rows} rows)")
            continue
        s = EmbeddingStore(folder)
        s.verify()  # raises, naming the bad shard
        typer.echo(f"{folder}: ok ({s.rows} rows)")


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
