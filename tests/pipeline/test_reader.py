"""One reader for every user file: each coercion in each format (real files in tmp_path), each
error naming the 0-based data row, and the same through `prepare` (file source) and `score`."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.errors import RmpipeError
from pipeline.reader import read_user_table
from pipeline.table import canonical_prompt, make_pair_id
from rmpipe.score import read_pairs

FORMATS = ["parquet", "jsonl", "jsonl.gz", "csv"]
TURNS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


def write(path: Path, rows: list[dict], bom: bool = False) -> Path:
    """``rows`` in the format of ``path``'s suffix, the way a user's tool would write them."""
    name = path.name
    if name.endswith(".parquet"):
        pl.DataFrame(rows, infer_schema_length=None).write_parquet(path)
        return path
    if name.endswith(".csv"):
        cols = list(rows[0])
        text = ",".join(cols) + "\n" + "".join(",".join("" if r[c] is None else str(r[c]) for c in cols) + "\n"
                                              for r in rows)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    data = (("\ufeff" if bom else "") + text).encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def base(n=3, **columns):
    return [{"prompt": f"p{i}", "response": f"r{i}", **{k: v[i] for k, v in columns.items()}} for i in range(n)]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv"])
def test_a_byte_order_mark_is_dropped_in_every_text_format(tmp_path, fmt):
    df = read_user_table(write(tmp_path / f"logs.{fmt}", base(), bom=True))
    assert df.columns[0] == "prompt" and df["prompt"].to_list() == ["p0", "p1", "p2"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("words", [["true", "False", "TRUE"], ["yes", "no", "Yes"], ["1", "0", "1"]])
def test_string_booleans_are_0_1_in_every_format(tmp_path, fmt, words):
    rows = base(observed=words, feedback=words, label=words)
    df = read_user_table(write(tmp_path / f"logs.{fmt}", rows))
    assert df["observed"].to_list() == [True, False, True]
    assert df["feedback"].to_list() == df["label"].to_list() == [1, 0, 1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_float_observed_and_feedback_are_accepted_with_nan_as_missing(tmp_path, fmt):
    rows = base(observed=[1.0, 0.0, 1.0], feedback=[1.0, None, 0.0])
    df = read_user_table(write(tmp_path / f"logs.{fmt}", rows))
    assert df["observed"].to_list() == [True, False, True]
    assert df["feedback"].to_list() == [1, None, 0]
    nan = tmp_path / "nan.parquet"
    pl.DataFrame({"prompt": ["a"], "response": ["b"], "feedback": [float("nan")]}).write_parquet(nan)
    assert read_user_table(nan)["feedback"].to_list() == [None]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_chat_turn_prompts_become_canonical(tmp_path, fmt):
    rows = [{"prompt": TURNS, "response": "r0"}, {"prompt": TURNS[:1], "response": "r1"}]
    df = read_user_table(write(tmp_path / f"logs.{fmt}", rows))
    assert df["prompt"].to_list() == [canonical_prompt(TURNS), canonical_prompt(TURNS[:1])]


@pytest.mark.parametrize("fmt", FORMATS)
def test_csv_text_columns_stay_text_and_ratings_parse(tmp_path, fmt):
    rows = [{"prompt": "p", "response": "42" if fmt == "csv" else "forty-two", "rating": "3.5"},
            {"prompt": "q", "response": "007" if fmt == "csv" else "seven", "rating": "1"}]
    df = read_user_table(write(tmp_path / f"logs.{fmt}", rows))
    assert df["response"].dtype == pl.String and df["rating"].to_list() == [3.5, 1.0]
    if fmt == "csv":
        assert df["response"].to_list() == ["42", "007"]


BAD = [  # (format, rows or raw bytes, message regex); every row number is a 0-based data row
    ("parquet", base(response=["ok", "  ", "ok"]), r"row 1, column response: empty text"),
    ("jsonl", base(prompt=["a", "b", "\t\n"]), r"row 2, column prompt: empty text"),
    ("csv", base(response=["ok", None, "ok"]), r"row 1, column response: missing value"),
    ("parquet", [{"prompt": "a", "response": 1}, {"prompt": "b", "response": 2}],
     r"row 0, column response: expected text, got a number \(1\)"),
    ("jsonl", [{"prompt": "a", "response": 3}], r"row 0, column response: expected text, got a number"),
    ("jsonl", [{"prompt": "a", "response": "b", "rating": 1}, {"prompt": "a", "response": "c", "rating": "x"}],
     r"row 1, column rating: text, but row 0 holds a number"),
    ("csv", base(rating=["1", "2", "n/a"]), r"row 2, column rating: 'n/a' is not a number"),
    ("parquet", base(observed=["yes", "maybe", "no"]), r"row 1, column observed: 'maybe' is not 0 or 1"),
    ("jsonl", base(feedback=[0.5, 1.0, 0.0]), r"row 0, column feedback: 0\.5 is not 0 or 1"),
    ("csv", base(observed=[0, 2, 1]), r"row 1, column observed: observed outside \{0, 1\}"),
    ("jsonl", [{"prompt": "a", "response": "b"}, {"prompt": TURNS, "response": "c"}],
     r"row 1, column prompt: a list, but row 0 holds text"),
    ("jsonl", [{"prompt": TURNS, "response": "b"}, {"prompt": [{"content": "x"}], "response": "c"}],
     r"row 1, column prompt: chat turn 0 needs a text 'role' \(missing\)"),
    ("jsonl", [{"prompt": TURNS, "response": "b"}, {"prompt": [{"role": "user", "content": 5}], "response": "c"}],
     r"row 1, column prompt: chat turn 0 needs a text 'content' \(a number\)"),
    ("jsonl", [{"prompt": [{"role": True, "content": "x"}], "response": "c"}],
     r"row 0, column prompt: chat turn 0 needs a text 'role' \(a boolean\)"),
    ("jsonl", [{"prompt": [{"role": "user", "content": {"text": "x"}}], "response": "c"}],
     r"row 0, column prompt: chat turn 0 needs a text 'content' \(an object\)"),
    ("parquet", [{"prompt": [{"role": "user", "content": 5}], "response": "c"}],
     r"row 0, column prompt: chat turn 0 needs a text 'content' \(a number\)"),
    ("parquet", [{"prompt": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}],
                  "response": "c"}], r"row 0, column prompt: chat turn 1 needs a text 'content'"),
    ("jsonl", b'{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": "\\ud800"}\n',
     r"row 1, column response: not valid Unicode \(a lone surrogate"),
    ("jsonl", b'\n{"prompt": "a", "response": "b"}\n\n{"prompt": oops}\n', r"row 1 \(line 4\): not valid JSON"),
    ("jsonl", b'{"prompt": "a"}\n[1]\n', r"row 1 \(line 2\): expected a JSON object per line"),
    ("jsonl", b'{"prompt": "a", "response": "b"}\n{"prompt": "\xff"}\n', r"row 1 \(line 2\): undecodable text"),
    ("csv", b"prompt,response\nhi,there\nbad,\xff\xfe\n", r"row 1 \(line 3\): undecodable text"),
    ("csv", b"", r"empty file"),
    ("jsonl.gz", gzip.compress(b"\n \n"), r"empty file"),
]


@pytest.mark.parametrize("fmt,rows,message", BAD, ids=[f"{b[0]}-{b[2][:30]}" for b in BAD])
def test_a_bad_cell_is_one_error_naming_file_row_and_column(tmp_path, fmt, rows, message):
    path = tmp_path / f"logs.{fmt}"
    if isinstance(rows, bytes):
        path.write_bytes(rows)
    else:
        write(path, rows)
    with pytest.raises(RmpipeError) as info:
        read_user_table(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert re.search(message, text), text


def test_only_the_columns_asked_for_are_coerced_and_mapping_names_the_file_column(tmp_path):
    path = write(tmp_path / "pairs.jsonl", [{"q": "a", "a": "b", "observed": "maybe"}])
    df = read_user_table(path, {"prompt": "q", "response": "a"}, coerce=("prompt", "response"))
    assert df["observed"].to_list() == ["maybe"]
    with pytest.raises(RmpipeError, match=r"row 0, column observed"):
        read_user_table(path, {"prompt": "q", "response": "a"})


def test_score_reads_as_prepare_reads(tmp_path):
    path = write(tmp_path / "pairs.jsonl", [{"prompt": TURNS, "response": "r", "extra": "yes"}], bom=True)
    pairs = read_pairs(path)
    assert pairs["pair_id"].to_list() == [make_pair_id(canonical_prompt(TURNS), "r")]
    assert pairs["extra"].to_list() == ["yes"]  # not a contract column: passed through as read


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_score_and_rerank_read_nfd_text_as_the_nfc_pair_prepare_stored(tmp_path, fmt):
    """read_pairs (score's and rerank's reader) puts text in the table's Unicode form before it
    hashes: a pair typed in NFD finds the embedding of the same pair prepared from NFC."""
    import unicodedata

    nfc, nfd = ("café", "réponse"), tuple(unicodedata.normalize("NFD", t) for t in ("café", "réponse"))
    assert nfc != nfd
    path = write(tmp_path / f"pairs.{fmt}", [dict(zip(("prompt", "response"), t)) for t in (nfc, nfd)])
    pairs = read_pairs(path)
    assert pairs["pair_id"].to_list() == [make_pair_id(*nfc)] * 2
    assert pairs["prompt"].to_list() == ["café", "café"]


# --- through the CLI ------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path, monkeypatch):
    from rmpipe.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("")  # a project that sets nothing: the defaults, no note
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def table(dataset="mine") -> pl.DataFrame:
    return pl.read_parquet(Path("data/prepared") / dataset / "feedback.parquet")


LOGGED = [{"prompt": f"p{i}", "response": f"r{i}", "observed": "yes" if i % 2 else "no",
           "feedback": "1" if i % 4 == 1 else ("0" if i % 2 else None)} for i in range(12)]


@pytest.mark.parametrize("name,rows,bom", [
    ("logs.jsonl", LOGGED, True),
    ("logs.parquet", LOGGED, False),
    ("logs.csv", [dict(r, observed=1.0 if r["observed"] == "yes" else 0.0) for r in LOGGED], False),
])
def test_prepare_reads_bom_string_booleans_and_float_observed(cli, name, rows, bom):
    write(Path(name), rows, bom=bom)
    result = cli("prepare", "--source", f"file:{name}", "--dataset", "mine")
    assert result.exit_code == 0, result.output
    df = table()
    assert df["observed"].to_list() == [bool(i % 2) for i in range(12)]
    assert df["feedback"].to_list() == [(1 if i % 4 == 1 else 0) if i % 2 else None for i in range(12)]


PREPARE_REFUSED = [
    ("whitespace-only response", "logs.parquet", base(4, response=["a", "b", " \t ", "c"], rating=[1, 2, 3, 4]),
     r"logs\.parquet: row 2, column response: empty text"),
    ("numeric response", "logs.jsonl", [{"prompt": "a", "response": 1, "rating": 1}],
     r"logs\.jsonl: row 0, column response: expected text, got a number"),
    ("chat turn without role", "logs.jsonl",
     [{"prompt": TURNS, "response": "a", "rating": 1}, {"prompt": [{"content": "x"}], "response": "b", "rating": 2}],
     r"logs\.jsonl: row 1, column prompt: chat turn 0 needs a text 'role'"),
    ("no role in any turn", "logs.parquet", [{"prompt": [{"content": "x"}], "response": "b", "rating": 2}],
     r"logs\.parquet: row 0, column prompt: chat turn 0 needs a text 'role'"),
    ("label the simulation would overwrite", "logs.csv",
     base(4, rating=[1, 2, 3, 4], label=[0, 0, 1, 0]),
     r"logs\.csv: row 3, column label: your label disagrees with the one simulated from column rating"),
    ("label with a gap and no rating", "logs.jsonl", base(3, label=[1, None, 0]),
     r"logs\.jsonl: row 1, column label: missing value"),
    ("label of 2 and no rating", "logs.csv", base(3, label=[1, 2, 0]),
     r"logs\.csv: row 1, column label: label outside \{0, 1\}"),
]


@pytest.mark.parametrize("name,rows,message", [c[1:] for c in PREPARE_REFUSED], ids=[c[0] for c in PREPARE_REFUSED])
def test_prepare_refuses_by_row_in_one_line(cli, name, rows, message):
    write(Path(name), rows)
    result = cli("prepare", "--source", f"file:{name}", "--dataset", "mine")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr
    assert not Path("data/prepared/mine").exists() or not any(Path("data/prepared/mine").iterdir())


def test_a_labelled_file_is_a_two_level_rating_and_keeps_its_label(cli):
    rows = [{"prompt": f"q{i % 10}", "response": f"a{i}", "label": i % 2} for i in range(60)]
    write(Path("labelled.csv"), rows)
    result = cli("prepare", "--source", "file:labelled.csv", "--dataset", "mine")
    assert result.exit_code == 0, result.output
    df = table()
    assert df["label"].to_list() == [i % 2 for i in range(60)]  # the user's, row for row
    assert df["rating"].to_list() == [float(i % 2) for i in range(60)]
    assert df["observed"].sum() > 0  # the paper's simulation ran on it
    sidecar = next(Path("data/prepared/mine").glob("*.json"))  # the table's sidecar
    assert "label (0/1) taken as a two-level rating" in sidecar.read_text()


def test_a_label_beside_a_rating_it_agrees_with_is_kept(cli):
    rows = [{"prompt": f"q{i % 10}", "response": f"a{i}", "rating": i % 5, "label": int(i % 5 > 2)}
            for i in range(60)]
    write(Path("logs.parquet"), rows)
    result = cli("prepare", "--source", "file:logs.parquet", "--dataset", "mine")
    assert result.exit_code == 0, result.output
    assert table()["label"].to_list() == [int(i % 5 > 2) for i in range(60)]


SCORE_REFUSED = [
    ("whitespace-only response", "pairs.csv", base(2, response=["a", "   "]), r"pairs\.csv: row 1, column response: empty text"),
    ("numeric response", "pairs.parquet", [{"prompt": "a", "response": 1.5}],
     r"pairs\.parquet: row 0, column response: expected text, got a number"),
    ("chat turn without role", "pairs.jsonl", [{"prompt": [{"content": "x"}], "response": "b"}],
     r"pairs\.jsonl: row 0, column prompt: chat turn 0 needs a text 'role'"),
    ("mixed prompts", "pairs.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": TURNS, "response": "b"}],
     r"pairs\.jsonl: row 1, column prompt: a list, but row 0 holds text"),
]


@pytest.mark.parametrize("name,rows,message", [c[1:] for c in SCORE_REFUSED], ids=[c[0] for c in SCORE_REFUSED])
def test_score_refuses_what_prepare_refuses_before_any_model(cli, name, rows, message):
    write(Path(name), rows)
    result = cli("score", "--head", "no-such-head", "--data", name)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr


@pytest.mark.parametrize("kind", ["dictionary-encoded", "Categorical", "Enum"])
def test_a_categorical_text_column_is_read_as_its_text(tmp_path, kind):
    """What pandas `category` and many Parquet writers produce is text, read as text (an Enum
    with many categories too, where the refusal once printed every category)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prompts, path = ["a", "b", "a"], tmp_path / "logs.parquet"
    if kind == "dictionary-encoded":
        pq.write_table(pa.table({"prompt": pa.array(prompts).dictionary_encode(), "response": ["x", "y", "z"],
                                 "rating": pa.array(["1", "2", "1"]).dictionary_encode()}), path)
    else:
        dtype = pl.Categorical if kind == "Categorical" else pl.Enum(["a", "b", *map(str, range(500))])
        pl.DataFrame({"prompt": pl.Series(prompts, dtype=dtype), "response": ["x", "y", "z"],
                      "rating": pl.Series(["1", "2", "1"], dtype=pl.Categorical)}).write_parquet(path)
    assert pl.read_parquet(path).schema["prompt"] != pl.String  # the file really holds categories
    df = read_user_table(path)
    assert df["prompt"].dtype == pl.String and df["prompt"].to_list() == prompts
    assert df["rating"].to_list() == [1.0, 2.0, 1.0]
    assert read_pairs(path)["pair_id"].to_list()[0] == make_pair_id("a", "x")


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_csv_reads_lf_crlf_and_cr_line_endings_alike(tmp_path, ending):
    path = tmp_path / "logs.csv"
    path.write_bytes(ending.join(["prompt,response,rating", "p0,r0,1", '"p1, quoted",r1,2', ""]).encode())
    df = read_user_table(path)
    assert df["prompt"].to_list() == ["p0", "p1, quoted"] and df["rating"].to_list() == [1.0, 2.0]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_text_prompt_spelling_chat_turns_is_those_turns_in_every_format(tmp_path, fmt):
    """JSON chat turns in a text cell are read as the turns (the reader's documented rule), made
    canonical: the conversation has the pair id of the same turns given as a list."""
    spaced = json.dumps(TURNS)  # not the canonical spelling: spaces, role before content
    assert spaced != canonical_prompt(TURNS)
    rows = [{"prompt": spaced, "response": "r"}, {"prompt": "[not turns]", "response": "r"}]
    if fmt == "csv":
        path = tmp_path / "pairs.csv"
        pl.DataFrame(rows).write_csv(path)
    else:
        path = write(tmp_path / f"pairs.{fmt}", rows)
    pairs = read_pairs(path)
    assert pairs["prompt"].to_list() == [canonical_prompt(TURNS), "[not turns]"]
    assert pairs["pair_id"][0] == make_pair_id(canonical_prompt(TURNS), "r")
