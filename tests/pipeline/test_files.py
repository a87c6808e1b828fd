"""A user's own table in any of the four formats reads to the same frame, in file order; a file
that cannot be read is one RmpipeError naming the file (and the line where there is one)."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from pipeline.errors import RmpipeError
from pipeline.files import read_any

ROWS = [{"prompt": "p3", "response": "r ü", "rating": 3}, {"prompt": "p1", "response": "r2", "rating": 1},
        {"prompt": "p2", "response": "r,3", "rating": 2}]


def jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write(path, rows=ROWS):
    name = path.name
    if name.endswith(".parquet"):
        pl.DataFrame(rows).write_parquet(path)
    elif name.endswith(".csv"):
        pl.DataFrame(rows).write_csv(path)
    elif name.endswith(".jsonl.gz"):
        path.write_bytes(gzip.compress(jsonl(rows).encode()))
    else:
        path.write_text(jsonl(rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["logs.parquet", "logs.jsonl", "logs.jsonl.gz", "logs.csv", "LOGS.JSONL"])
def test_every_format_reads_the_same_rows_in_file_order(tmp_path, name):
    df = read_any(write(tmp_path / name))
    assert df.columns == ["prompt", "response", "rating"]
    assert df.to_dicts() == ROWS


def test_blank_jsonl_lines_are_skipped(tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_text("\n" + jsonl(ROWS[:1]) + "   \n" + jsonl(ROWS[1:]) + "\n\n")
    assert read_any(path).to_dicts() == ROWS


@pytest.mark.parametrize("name, content, message", [
    ("logs.jsonl", '{"prompt": "a"}\n{"prompt": \n', r"logs\.jsonl: line 2: not valid JSON"),
    ("logs.jsonl", '{"prompt": "a"}\n\n[1, 2]\n', r"logs\.jsonl: line 3: expected a JSON object per line"),
    ("logs.jsonl", b'{"prompt": "a"}\n{"prompt": "\xff"}\n', r"logs\.jsonl: line 2: undecodable text \(not UTF-8: byte 0xff"),
    ("logs.jsonl", '{"prompt": "a"}\n{"prompt": ["a"]}\n', r"logs\.jsonl: a column mixes types"),
    ("logs.jsonl", "\n  \n", r"logs\.jsonl: empty file \(no rows\)"),
    ("logs.csv", b"", r"logs\.csv: empty file \(no rows\)"),
    ("logs.csv", 'prompt,response\n"a,b\n', r"logs\.csv: not a readable CSV file"),
    ("logs.parquet", b"PAR1 not really", r"logs\.parquet: not a readable Parquet file"),
    ("logs.jsonl.gz", b"not gzip at all", r"logs\.jsonl\.gz: not a readable gzip file"),
    ("logs.txt", "prompt\n", r"logs\.txt: unknown file format \(expected one of \.parquet, \.jsonl"),
])
def test_an_unreadable_file_is_one_error_naming_the_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RmpipeError, match=message) as info:
        read_any(path)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(RmpipeError, match=r"nope\.jsonl: no such file"):
        read_any(tmp_path / "nope.jsonl")
