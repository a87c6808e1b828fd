"""Reading a user's own table (parquet, jsonl, jsonl.gz, csv), in file order, with errors that
name the file and line. Shared by the logs source (prepare) and ``rmpipe score``."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import polars as pl

from pipeline.errors import RmpipeError

FORMATS = (".parquet", ".jsonl", ".jsonl.gz", ".csv")


def _text(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RmpipeError(f"{path}: line {line}: undecodable text (not UTF-8: byte "
                          f"0x{raw[exc.start]:02x} at offset {exc.start})") from None


def read_any(path: Path) -> pl.DataFrame:
    """The file as a frame, in file order; format by suffix."""
    if not path.exists():
        raise RmpipeError(f"{path}: no such file")
    name = path.name.lower()
    fmt = next((f for f in (".jsonl.gz",) + FORMATS if name.endswith(f)), None)
    if fmt is None:
        raise RmpipeError(f"{path}: unknown file format (expected one of {', '.join(FORMATS)})")
    if path.stat().st_size == 0:
        raise RmpipeError(f"{path}: empty file (no rows)")
    if fmt == ".parquet":
        try:
            return pl.read_parquet(path)
        except Exception as exc:
            raise RmpipeError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    raw = path.read_bytes()
    if fmt == ".jsonl.gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise RmpipeError(f"{path}: not a readable gzip file ({exc})") from None
    text = _text(path, raw)
    if not text.strip():
        raise RmpipeError(f"{path}: empty file (no rows)")
    if fmt == ".csv":
        try:
            return pl.read_csv(io.StringIO(text), infer_schema_length=None)
        except Exception as exc:
            raise RmpipeError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0][:200]})") from None
    records = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RmpipeError(f"{path}: line {i + 1}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise RmpipeError(f"{path}: line {i + 1}: expected a JSON object per line")
        records.append(rec)
    try:
        return pl.from_dicts(records, infer_schema_length=None)
    except Exception as exc:
        raise RmpipeError(f"{path}: a column mixes types ({str(exc).splitlines()[0][:200]})") from None
