"""The flags every command shares, declared once: the settings file, progress bars, and the
folders (data, embedding stores, heads, reports) to use instead of the ones ``params.yaml``
names. :func:`load` reads the settings and applies the folder flags, so each command's body
is one call and a bad value from a flag is named like one from the file."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.checks import SettingError
from pipeline.config import DEFAULT_PARAMS, METHOD_NAMES, METHODS, Params, load_params
from pipeline.errors import RmpipeError

ParamsFile = Annotated[Path, typer.Option("--params", help="settings file")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")]
Dataset = Annotated[Optional[str], typer.Option("--dataset", help="data/prepared/<dataset>/ (overrides dataset)")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="prepared tables' folder (overrides data_dir)")]
StoreDir = Annotated[Optional[Path], typer.Option("--store-dir", help="embedding stores' folder (overrides embed.store_dir)")]
HeadsDir = Annotated[Optional[Path], typer.Option("--heads-dir", help="fitted heads' folder (overrides fit.heads_dir)")]
ReportsDir = Annotated[Optional[Path], typer.Option("--reports-dir", help="reports' folder (overrides evaluate.reports_dir)")]

# --method offers exactly the methods registry's names (pipeline.config.METHODS) and lists them
MethodName = enum.Enum("MethodName", {name: name for name in METHOD_NAMES}, type=str)
METHOD_HELP = "; ".join(f"{kind}: {' | '.join(names)}" for kind, names in METHODS.items())


def method_option(help: str):
    """A repeatable ``--method`` (declare it ``Optional[List[MethodName]]``)."""
    return typer.Option(None, "--method", help=f"{help} ({METHOD_HELP})")


def load(params: Path = DEFAULT_PARAMS, *, dataset: str | None = None, data_dir: Path | None = None,
         store_dir: Path | None = None, heads_dir: Path | None = None,
         reports_dir: Path | None = None) -> Params:
    """``params`` loaded, with the flags that were given replacing their fields."""
    p = load_params(params)
    top = {k: str(v) for k, v in (("dataset", dataset), ("data_dir", data_dir)) if v is not None}
    try:
        if store_dir is not None:
            p = dataclasses.replace(p, embed=dataclasses.replace(p.embed, store_dir=str(store_dir)))
        if heads_dir is not None:
            p = dataclasses.replace(p, fit=dataclasses.replace(p.fit, heads_dir=str(heads_dir)))
        if reports_dir is not None:
            p = dataclasses.replace(p, evaluate=dataclasses.replace(p.evaluate, reports_dir=str(reports_dir)))
        return dataclasses.replace(p, **top)
    except SettingError as exc:
        raise flag_error(params, exc) from None


def flag_error(params: Path, exc: SettingError) -> RmpipeError:
    """A setting that a flag made bad, named like one from the file."""
    return RmpipeError(f"{params} + flags: {exc}")
