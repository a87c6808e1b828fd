"""The flags every command shares, declared once: the settings file, progress bars, and the
folders (data, embedding stores, heads, reports) to use instead of the ones ``params.yaml``
names. :func:`load` reads the settings and applies the folder flags, so each command's body
is one call and a bad value from a flag is named like one from the file."""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.checks import SettingError
from pipeline.config import DEFAULT_PARAMS, METHOD_NAMES, METHODS, Params, load_params
from pipeline.errors import RmpipeError

ParamsFile = Annotated[Optional[Path], typer.Option("--params", help="settings file [default: ./params.yaml, or the built-in defaults without one]")]
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


FOLDER_FLAGS = (("dataset", Dataset), ("data_dir", DataDir), ("store_dir", StoreDir),
                ("heads_dir", HeadsDir), ("reports_dir", ReportsDir))


@dataclasses.dataclass(frozen=True)
class Run:
    """What the common flags give a command: the loaded settings and where they came from."""

    params: Params
    path: Path  # the settings file (params.yaml when none was given)
    flagged: bool  # a --dataset or folder flag replaced a setting

    def error(self, exc: SettingError) -> RmpipeError:
        return flag_error(self.path, exc)


def with_common_flags(fn):
    """Give a command ``fn(run: Run, **own_options)`` the common flags (``--params`` and the
    folder overrides), declared here once: typer sees them in the command's signature, and the
    command receives the loaded :class:`Run` instead."""
    own = [p for name, p in inspect.signature(fn, eval_str=True).parameters.items() if name != "run"]
    common = [inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=ParamsFile)]
    common += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
               for name, kind in FOLDER_FLAGS]

    @functools.wraps(fn)
    def command(**options):
        path = options.pop("params")
        folders = {name: options.pop(name) for name, _ in FOLDER_FLAGS}
        run = Run(load(path, **folders), path or DEFAULT_PARAMS, any(v is not None for v in folders.values()))
        return fn(run, **options)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + common
    command.__signature__ = inspect.Signature(params, return_annotation=None)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def load(params: Path | None = None, *, dataset: str | None = None, data_dir: Path | None = None,
         store_dir: Path | None = None, heads_dir: Path | None = None,
         reports_dir: Path | None = None) -> Params:
    """``params`` loaded (``None``: ./params.yaml, or the built-in defaults without one, which is
    said on stderr), with the flags that were given replacing their fields."""
    if params is None and not DEFAULT_PARAMS.exists():
        typer.echo(f"rmpipe: no {DEFAULT_PARAMS} in {Path.cwd()}: running on the built-in defaults "
                   f"(give --params FILE for your own settings)", err=True)
    p = load_params(params)
    params = params or DEFAULT_PARAMS
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
