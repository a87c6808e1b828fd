"""Bad input, through the real CLI: each case is one line on stderr naming the file and the
row or column, exit code 2, and no output file left behind."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.table import read_provenance

GOOD = [{"prompt": "p0", "response": "r0", "observed": True, "feedback": 1},
        {"prompt": "p1", "response": "r1", "observed": False, "feedback": None},
        {"prompt": "p2", "response": "r2", "observed": True, "feedback": 0}]


def rows(**changes) -> list[dict]:
    """GOOD with ``{row: {column: value}}`` applied (value ... deletes the column)."""
    out = [dict(r) for r in GOOD]
    for key, change in changes.items():
        i = int(key[1:])
        out[i].update(change)
    return out


def logs(name: str, records: list[dict] | bytes, drop: str | None = None):
    """Write ``records`` to ``name`` (format by suffix); return the CLI args that read it."""
    def setup():
        path = Path(name)
        if isinstance(records, bytes):
            path.write_bytes(records)
        else:
            df = pl.DataFrame(records, infer_schema_length=None)
            if drop:
                df = df.drop(drop)
            if name.endswith(".parquet"):
                df.write_parquet(path)
            elif name.endswith(".csv"):
                df.write_csv(path)
            else:
                text = "".join(json.dumps(r) + "\n" for r in df.iter_rows(named=True)).encode()
                path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
        return ["--source", f"file:{name}"]
    return setup


def params(yaml_text: str, *flags: str):
    def setup():
        Path("params.yaml").write_text(yaml_text)
        return ["--params", "params.yaml", *flags]
    return setup


def flags(*args: str):
    return lambda: list(args)


CASES = [
    ("missing column", logs("logs.csv", GOOD, drop="response"), r"logs\.csv: missing column 'response'"),
    ("missing mapped column", lambda: logs("logs.csv", GOOD)() + ["--column", "prompt=question"],
     r"logs\.csv: missing column 'question' \(mapped to prompt\)"),
    ("wrong type", logs("logs.jsonl", rows(r0={"feedback": "maybe"}, r2={"feedback": "no"})),
     r"logs\.jsonl: row 0, column feedback: 'maybe' is not 0 or 1"),
    ("empty prompt", logs("logs.csv", rows(r1={"prompt": "   "})), r"logs\.csv: row 1, column prompt: empty text"),
    ("empty response", logs("logs.parquet", rows(r2={"response": ""})),
     r"logs\.parquet: row 2, column response: empty text"),
    ("feedback outside {0,1}", logs("logs.csv", rows(r0={"feedback": 2})),
     r"logs\.csv: row 0, column feedback: feedback outside \{0, 1\}"),
    ("feedback where not observed", logs("logs.jsonl", rows(r1={"feedback": 1})),
     r"logs\.jsonl: row 1, column feedback: feedback on a row whose observed is false"),
    ("observed without feedback", logs("logs.jsonl.gz", rows(r2={"feedback": None})),
     r"logs\.jsonl\.gz: row 2, column feedback: observed row without feedback"),
    ("wrong pair_id", logs("logs.parquet", [dict(r, pair_id="0" * 32) for r in GOOD]),
     r"logs\.parquet: row 0, column pair_id: pair_id does not match"),
    ("unknown split", logs("logs.csv", [dict(r, split=s) for r, s in zip(GOOD, ["train", "dev", "test"])]),
     r"logs\.csv: row 1, column split: unknown split"),
    ("NaN rating", logs("logs.parquet", [dict(r, rating=v) for r, v in zip(GOOD, [1.0, float("nan"), 2.0])]),
     r"logs\.parquet: row 1, column rating: NaN value"),
    ("empty file", logs("logs.csv", b""), r"logs\.csv: empty file"),
    ("empty gzip file", logs("logs.jsonl.gz", gzip.compress(b"\n")), r"logs\.jsonl\.gz: empty file"),
    ("undecodable text", logs("logs.csv", b"prompt,response\nhi,there\nbad,\xff\xfe\n"),
     r"logs\.csv: row 1 \(line 3\): undecodable text"),
    ("not JSON", logs("logs.jsonl", b'{"prompt": "a", "response": "b"}\n{"prompt": oops}\n'),
     r"logs\.jsonl: row 1 \(line 2\): not valid JSON"),
    ("no such file", flags("--source", "file:nope.csv"), r"nope\.csv: no such file"),
    ("unknown format", logs("logs.xlsx", b"PK"), r"logs\.xlsx: unknown file format"),
    ("unknown source kind", params("prepare:\n  source:\n    kind: s3\n"),
     r"params\.yaml: prepare\.source\.kind must be one of builtin, hub, shared, file, got 's3'"),
    ("unknown source flag", flags("--source", "ftp:x"), r"--source: unknown source 'ftp:x'"),
    ("unknown shared set", flags("--source", "shared:nope"), r"prepare\.source\.name: unknown shared set 'nope'"),
    ("unknown hub dataset", flags("--source", "hub:someone/else"),
     r"prepare\.source\.name: unknown hub dataset 'someone/else'"),
    ("rho_pos + rho_neg >= 1", flags("--rho-pos", "0.5", "--rho-neg", "0.5"),
     r"params\.yaml \+ flags: prepare\.simulate\.rho_pos \+ rho_neg must be < 1"),
    ("alpha zero", params("prepare:\n  simulate:\n    alpha: 0\n"),
     r"params\.yaml: prepare\.simulate\.alpha must be in \(0, 1\], got 0"),
    ("alpha above one", flags("--alpha", "1.5"), r"prepare\.simulate\.alpha must be in \(0, 1\], got 1\.5"),
    ("target rate zero", flags("--target-rate", "0"), r"prepare\.simulate\.target_rate must be in \(0, 1\]"),
    ("target rate above one", params("prepare:\n  simulate:\n    target_rate: 1.5\n"),
     r"params\.yaml: prepare\.simulate\.target_rate must be in \(0, 1\], got 1\.5"),
    ("unknown shape", flags("--shape", "u"), r"prepare\.simulate\.shape must be one of monotone, extremes"),
    ("bad fractions", params("prepare:\n  split:\n    fractions: [0.5, 0.3, 0.3]\n"),
     r"params\.yaml: prepare\.split\.fractions must be three positive numbers"),
]


@pytest.mark.parametrize("setup,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_no_output(cli, setup, message):
    result = cli("prepare", *setup())
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rmpipe: error: "), result.stderr
    assert pytest.importorskip("re").search(message, lines[0]), lines[0]
    left = [p for p in Path("data").rglob("*") if p.is_file()] if Path("data").exists() else []
    assert left == []


def test_good_logs_pass_the_same_cli(cli):
    ten_prompts = [dict(r, prompt=f"{r['prompt']}-{k}") for k in range(10) for r in GOOD]  # all three splits filled
    result = cli("prepare", *logs("logs.csv", ten_prompts)(), "--dataset", "mine")
    assert result.exit_code == 0, result.output
    assert Path("data/prepared/mine/feedback.parquet").exists()
    prov = read_provenance("data/prepared/mine/feedback.parquet")
    assert prov.feedback["simulated"] is False and prov.simulation is None
