"""The one reader of a user's own table (parquet, jsonl, jsonl.gz, csv), for every command
(``prepare``'s file source, ``score``, ``rerank``), with one set of coercions whatever the format.

Rows: every message says ``row N``, N the 0-based *data* row (the first record after a CSV header,
or the first non-blank JSONL line, is row 0); an error found while parsing adds the 1-based file
line, ``row 1 (line 3)``.

Coercions, the same in every format:
- a UTF-8 byte-order mark is dropped (CSV and JSONL alike);
- ``observed``, ``audit``, ``feedback``, ``label``: booleans, 0/1 integers, integral floats (NaN = missing, as
  pandas writes it) and the strings true/false, yes/no, 1/0 (any case) are 0/1;
- ``rating``, ``propensity_logged``: numbers, or strings that parse as numbers;
- ``prompt``: text, or a list of chat turns (each with a ``role`` and a ``content``) made canonical
  (:func:`pipeline.table.canonical_prompt`); ``response``: text. In CSV every cell is text, so both
  are read as text. A text prompt that is a JSON list of chat turns (it starts ``[{``) *is* read as
  those turns, in every format and command, and made canonical like a list: so a CSV carries chat
  prompts, and one conversation has one pair id whichever way it was written. A missing or
  whitespace-only prompt or response is refused. A Categorical or Enum column (pandas
  ``category``, dictionary-encoded Parquet) is read as the text it holds.
- Ambiguity is refused, never guessed: a CSV header naming a column twice, a JSONL object with a
  key twice (JSON parsers keep the last), a ``;``- or tab-separated "CSV".
A cell that fits none of these, a lone surrogate, or a JSONL column that mixes kinds (text in one
row, a list or a number in another) is one :class:`RmpipeError` naming the file, row and column.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Mapping, Sequence

import polars as pl

from pipeline.errors import RmpipeError
from pipeline.table import _refuse_rows, canonical_prompt, kind_of, text_turns, turn_problem

FORMATS = (".parquet", ".jsonl", ".jsonl.gz", ".csv")
TEXT = ("prompt", "response")
BINARY = ("observed", "audit", "feedback", "label")
NUMBER = ("rating", "propensity_logged")
CONTRACT = (*TEXT, *BINARY, *NUMBER)
WORDS = {"true": 1, "false": 0, "yes": 1, "no": 0, "1": 1, "0": 0}
BOM = "\ufeff"


def file_format(path: Path) -> str:
    """The format by suffix (case-insensitive), refused by name if unknown."""
    name = path.name.lower()
    fmt = next((f for f in (".jsonl.gz",) + FORMATS if name.endswith(f)), None)
    if fmt is None:
        raise RmpipeError(f"{path}: unknown file format (expected one of {', '.join(FORMATS)})")
    return fmt


def read_user_table(path: str | Path, columns: Mapping[str, str] | None = None,
                    coerce: Sequence[str] = CONTRACT) -> pl.DataFrame:
    """The file as a frame in file order, its contract columns coerced (module docstring).

    ``columns`` maps contract names to the file's (``prepare.source.columns``); a contract column
    it leaves out is taken by its own name. Only the contract columns in ``coerce`` are touched
    (``score`` coerces prompt and response, and passes every other column through as read)."""
    path = Path(path)
    names = {c: (columns or {}).get(c, c) for c in coerce}
    df = read_any(path, text=[names[c] for c in TEXT if c in names])
    for contract, col in names.items():
        if col in df.columns:
            label = col if col == contract else f"{col} (mapped to {contract})"
            df = df.with_columns(_coerce(df[col].alias(label), contract, f"{path}").alias(col))
    return df


def read_any(path: Path, text: Sequence[str] = ()) -> pl.DataFrame:
    """The file as read, in file order; ``text`` columns of a CSV are read as text."""
    if not path.exists():
        raise RmpipeError(f"{path}: no such file")
    fmt = file_format(path)
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
    return _csv(path, raw, text) if fmt == ".csv" else _jsonl(path, raw)


def _csv(path: Path, raw: bytes, text: Sequence[str]) -> pl.DataFrame:
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RmpipeError(f"{path}: {_csv_row(raw)}: undecodable text (not UTF-8: byte "
                          f"0x{raw[exc.start]:02x})") from None
    body = body.removeprefix(BOM)
    if not body.strip():
        raise RmpipeError(f"{path}: empty file (no rows)")
    if "\r" in body and "\n" not in body:  # old Mac line endings: the parser splits on LF only
        body = body.replace("\r", "\n")
    header = _csv_header(path, body)
    try:
        return pl.read_csv(io.StringIO(body), infer_schema_length=None,
                           schema_overrides={c: pl.String for c in text if c in header})
    except Exception as exc:
        ragged = _ragged_row(body, len(header))
        if ragged:
            raise RmpipeError(f"{path}: {ragged}") from None
        raise RmpipeError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0][:200]})") from None


def _records(body: str):
    """The CSV module's reader over ``body``, any line ending (LF, CRLF, CR)."""
    return csv.reader(io.StringIO(body, newline=""))


def _csv_header(path: Path, body: str) -> list[str]:
    """The header, refused when it names a column twice (which one would be read is a guess)
    or is one column holding another delimiter (a ``;``- or tab-separated file)."""
    header = next(_records(body), [])
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in seen:
            raise RmpipeError(f"{path}: column {name!r} appears twice in the header (columns "
                              f"{seen[name] + 1} and {i + 1}); rename or drop one")
        seen[name] = i
    if len(header) == 1:
        found = [d for d in (";", "\t", "|") if d in header[0]]
        if found:
            raise RmpipeError(f"{path}: the header is one column, {header[0][:60]!r}: the file looks "
                              f"{found[0]!r}-separated; rmpipe reads comma-separated CSV (save it "
                              "with commas, or as JSONL or Parquet)")
    return header


def _ragged_row(body: str, width: int) -> str | None:
    """The first record whose field count is not the header's, as ``row N (line L): ...``."""
    reader = _records(body)
    try:
        for i, record in enumerate(reader):
            if i and record and len(record) != width:
                return (f"row {i - 1} (line {reader.line_num}): {len(record)} fields, the header "
                        f"has {width} (a comma in an unquoted cell, or another delimiter?)")
    except csv.Error:
        return None
    return None


def _csv_row(raw: bytes) -> str:
    """Where the first undecodable byte of a CSV is: ``row N (line L)`` or ``header``."""
    reader = _records(raw.decode("utf-8", errors="surrogateescape"))
    try:
        for i, record in enumerate(reader):
            if any(_surrogate(cell) for cell in record):
                return "header" if i == 0 else f"row {i - 1} (line {reader.line_num})"
    except csv.Error:  # e.g. a NUL byte: the position is then unknown
        pass
    return "a row"


def _jsonl(path: Path, raw: bytes) -> pl.DataFrame:
    records, kinds = [], {}
    for i, line in enumerate(raw.split(b"\n")):
        if i == 0:
            line = line.removeprefix(BOM.encode())
        if not line.strip():
            continue
        at = f"{path}: row {len(records)}"
        try:
            rec = json.loads(line.decode("utf-8"), object_pairs_hook=_no_repeated_key)
        except UnicodeDecodeError as exc:
            raise RmpipeError(f"{at} (line {i + 1}): undecodable text (not UTF-8: byte "
                              f"0x{line[exc.start]:02x})") from None
        except json.JSONDecodeError as exc:
            raise RmpipeError(f"{at} (line {i + 1}): not valid JSON ({exc.msg})") from None
        except RepeatedKey as exc:
            raise RmpipeError(f"{at} (line {i + 1}): key {exc.args[0]!r} appears twice in one "
                              "object (which one is meant is a guess); keep one") from None
        if not isinstance(rec, dict):
            raise RmpipeError(f"{at} (line {i + 1}): expected a JSON object per line")
        for key, value in rec.items():
            _check_turns(value, f"{at}, column {key}")
            kind = kind_of(value)
            first = kinds.setdefault(key, (kind, len(records))) if kind else None
            if first and first[0] != kind:
                raise RmpipeError(f"{at}, column {key}: {kind}, but row {first[1]} holds {first[0]} "
                                  "(one kind per column)")
        records.append(rec)
    if not records:
        raise RmpipeError(f"{path}: empty file (no rows)")
    try:
        return pl.from_dicts(records, infer_schema_length=None)
    except UnicodeEncodeError:
        for row, rec in enumerate(records):
            for key, value in rec.items():
                if _surrogate(value):
                    raise RmpipeError(f"{path}: row {row}, column {key}: not valid Unicode (a lone "
                                      "surrogate, e.g. an escaped \\ud800)") from None
        raise
    except Exception as exc:
        raise RmpipeError(f"{path}: a column mixes types ({str(exc).splitlines()[0][:200]})") from None


class RepeatedKey(ValueError):
    """A JSON object names a key twice."""


def _no_repeated_key(pairs: list[tuple]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        raise RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _check_turns(value, where: str) -> None:
    """A chat turn's role and content must be text, checked before the frame is built: polars
    would turn a number among texts into text (``5`` -> ``"5"``) and the row would pass. A
    missing one is left to :func:`canonical_prompt`, which sees it as null."""
    if not isinstance(value, list):
        return
    for j, turn in enumerate(value):
        for key in ("role", "content"):
            problem = turn_problem(turn, key)
            if problem and problem != "missing":
                raise RmpipeError(f"{where}: chat turn {j} needs a text {key!r} ({problem})")


def _surrogate(value) -> bool:
    """Whether a string (or one nested in lists and objects) holds a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return False
        except UnicodeEncodeError:
            return True
    if isinstance(value, list):
        return any(_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_surrogate(v) for v in value.values())
    return False


# --- coercions -------------------------------------------------------------------------------
def _coerce(col: pl.Series, contract: str, where: str) -> pl.Series:
    if isinstance(col.dtype, (pl.Categorical, pl.Enum)):  # pandas `category`, dictionary pages
        col = col.cast(pl.String)
    if contract in TEXT:
        return _text(col, contract, where)
    if col.dtype == pl.Null:
        return col
    if contract in BINARY:
        out = _binary(col, where)
        if contract in ("observed", "audit"):
            _refuse_rows(~out.is_in([0, 1]) & out.is_not_null(), where, col.name, f"{contract} outside {{0, 1}}")
            out = out.cast(pl.Boolean)
        return out
    return _number(col, where)


def _first(mask: pl.Series) -> int:
    return int(mask.fill_null(False).arg_true()[0])


def _bad(col: pl.Series, mask: pl.Series, where: str, what: str) -> None:
    """Refuse the first row where ``mask`` holds, showing its value."""
    if mask.fill_null(False).any():
        i = _first(mask)
        raise RmpipeError(f"{where}: row {i}, column {col.name}: {shown(col[i])} {what}")


def _text(col: pl.Series, contract: str, where: str) -> pl.Series:
    name = col.name
    if isinstance(col.dtype, pl.List) and contract == "prompt":
        col = pl.Series(name, [None if t is None else
                               canonical_prompt(t, f"{where}: row {i}, column {name}")
                               for i, t in enumerate(col.to_list())], dtype=pl.String)
    elif contract == "prompt" and col.dtype == pl.String and col.str.starts_with("[{").any():
        col = col.map_elements(_canonical_text, return_dtype=pl.String, skip_nulls=True)
    elif col.dtype not in (pl.String, pl.Null):
        kind = "a number" if col.dtype.is_numeric() else f"type {type_name(col.dtype)}"
        i = _first(col.is_not_null())
        raise RmpipeError(f"{where}: row {i}, column {name}: expected text, got {kind} ({shown(col[i])})")
    _refuse_rows(col.is_null(), where, name, "missing value")
    _refuse_rows(col.str.strip_chars().str.len_chars() == 0, where, name, "empty text")
    return col


def _canonical_text(prompt: str) -> str:
    """A text prompt, or the canonical form of the chat turns it spells (module docstring)."""
    turns = text_turns(prompt)
    return prompt if turns is None else canonical_prompt(turns)


def _binary(col: pl.Series, where: str) -> pl.Series:
    """0/1 as Int64 (other integers are left for the table's check to name)."""
    if col.dtype == pl.Boolean:
        return col.cast(pl.Int64)
    if col.dtype.is_integer():
        return col.cast(pl.Int64)
    if col.dtype.is_float():
        col = col.fill_nan(None)
        _bad(col, col != col.round(), where, "is not 0 or 1")
        return col.cast(pl.Int64)
    if col.dtype == pl.String:
        words = col.str.strip_chars().str.to_lowercase().replace_strict(WORDS, default=None,
                                                                       return_dtype=pl.Int64)
        _bad(col, words.is_null() & col.is_not_null(), where,
             "is not 0 or 1 (nor true/false, yes/no)")
        return words
    i = _first(col.is_not_null())
    raise RmpipeError(f"{where}: row {i}, column {col.name}: expected 0 or 1, got type {type_name(col.dtype)}")


def _number(col: pl.Series, where: str) -> pl.Series:
    if col.dtype.is_numeric():
        return col.cast(pl.Float64)
    if col.dtype == pl.String:
        out = col.str.strip_chars().cast(pl.Float64, strict=False)
        _bad(col, out.is_null() & col.is_not_null(), where, "is not a number")
        return out
    i = _first(col.is_not_null())
    raise RmpipeError(f"{where}: row {i}, column {col.name}: expected a number, got type {type_name(col.dtype)}")


def shown(value, width: int = 60) -> str:
    """A cell's repr, cut to ``width`` characters: a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def type_name(dtype: pl.DataType) -> str:
    """A column type in a few words: ``Struct``, ``List``, never a struct's every field or an
    enum's every category."""
    return str(dtype.base_type())
