"""CLI commands of the prepare stage (registered by rmpipe/cli.py)."""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import typer

from pipeline.checks import SettingError
from pipeline.errors import RmpipeError
from pipeline.options import Run, with_common_flags


def parse_source(spec: str, where: str = "--source") -> dict:
    """``builtin`` | ``hub:<id>`` | ``shared:<set>`` | ``file:<path>`` -> SourceParams fields."""
    kind, _, rest = spec.partition(":")
    if kind not in ("builtin", "hub", "shared", "file"):
        raise RmpipeError(f"{where}: unknown source {spec!r} (expected builtin, hub:<dataset id>, "
                          "shared:<hh-rlhf|pandalm|llmbar> or file:<path>)")
    if kind == "file":
        return {"kind": kind, "path": rest or None}
    return {"kind": kind, "name": rest or None}


@with_common_flags
def prepare(
    run: Run,
    source: Optional[str] = typer.Option(None, help="builtin | hub:<id> | shared:<set> | file:<path>"),
    path: Optional[str] = typer.Option(None, help="hub: local folder laid out like the hub repo; file: your logs"),
    config: Optional[str] = typer.Option(None, help="hub config name or data_dir"),
    split: Optional[str] = typer.Option(None, help="hub: load only this split (then 60/20/20)"),
    column: Optional[List[str]] = typer.Option(None, help="file: CONTRACT=YOURS column mapping (repeatable)"),
    rows: Optional[int] = typer.Option(None, help="builtin: responses to generate"),
    alpha: Optional[float] = typer.Option(None, help="propensity base alpha in (0, 1]"),
    target_rate: Optional[float] = typer.Option(None, help="mean observation rate in (0, 1]"),
    rho_pos: Optional[float] = typer.Option(None, help="P(feedback 0 | true 1)"),
    rho_neg: Optional[float] = typer.Option(None, help="P(feedback 1 | true 0)"),
    shape: Optional[str] = typer.Option(None, help="propensity shape: monotone | extremes"),
    seed: Optional[int] = typer.Option(None, help="simulation seed"),
    split_seed: Optional[int] = typer.Option(None, help="split seed"),
    simulate: Optional[bool] = typer.Option(None, "--simulate/--no-simulate"),
    feedback: Optional[str] = typer.Option(None, help="explicit | implicit (clicks/copies: 1 acted, 0 not)"),
) -> None:
    """Turn a source into the feedback table (data/prepared/<dataset>/feedback.parquet),
    simulating observational feedback as docs/method.md describes unless the source has logs."""
    from stages.prepare.run import prepare as run_prepare, summary

    p = run.params
    pp = p.prepare
    src = dict(parse_source(source) if source else {})
    for key, value in (("path", path), ("config", config), ("split", split), ("rows", rows)):
        if value is not None:
            src[key] = value
    if column:
        mapping = {}
        for item in column:
            contract, eq, theirs = item.partition("=")
            if not eq or not contract or not theirs:
                raise RmpipeError(f"--column: expected CONTRACT=YOURS, got {item!r}")
            mapping[contract] = theirs
        src["columns"] = mapping
    if source and "kind" in src and src["kind"] != pp.source.kind:
        base = type(pp.source)(seed=pp.source.seed)  # a new kind starts from clean settings
    else:
        base = pp.source
    sim = {k: v for k, v in (("alpha", alpha), ("target_rate", target_rate), ("rho_pos", rho_pos),
                             ("rho_neg", rho_neg), ("shape", shape), ("seed", seed),
                             ("enabled", simulate)) if v is not None}
    spl = {"seed": split_seed} if split_seed is not None else {}
    kind = {"feedback": feedback} if feedback is not None else {}
    try:
        pp = dataclasses.replace(pp, source=dataclasses.replace(base, **src),
                                 simulate=dataclasses.replace(pp.simulate, **sim),
                                 split=dataclasses.replace(pp.split, **spl), **kind)
    except SettingError as exc:
        raise run.error(exc) from None
    p = dataclasses.replace(p, prepare=pp)
    flagged = bool(src or sim or spl or run.flagged or kind)
    result = run_prepare(p, where=f"{run.path}{' + flags' if flagged else ''}")
    for hint in result.report.get("hints", ()):
        typer.echo(f"rmpipe: hint: {hint}", err=True)
    typer.echo(summary(result))


COMMANDS: list = [prepare]
