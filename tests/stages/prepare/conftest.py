"""Tiny real inputs for the prepare stage: local folders laid out like the hub repositories
(read by the real ``datasets.load_dataset`` offline), and a runner for the real CLI."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402


@pytest.fixture(autouse=True)
def _offline_hf_cache(tmp_path_factory, monkeypatch):
    """Keep datasets offline and its cache out of ~/.cache (if it is already imported)."""
    import sys

    if "datasets" in sys.modules:
        cfg = sys.modules["datasets"].config
        monkeypatch.setattr(cfg, "HF_HUB_OFFLINE", True, raising=False)
        monkeypatch.setattr(cfg, "HF_DATASETS_OFFLINE", True, raising=False)
        monkeypatch.setattr(cfg, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf-cache")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _dialogue(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


@pytest.fixture(scope="session")
def hub_dirs(tmp_path_factory) -> dict[str, Path]:
    """One folder per hub dataset, with the files where the hub repository keeps them."""
    root = tmp_path_factory.mktemp("hub")
    # nvidia/HelpSteer: train.jsonl.gz and validation.jsonl.gz at the top level.
    hs = root / "HelpSteer"
    ratings = dict(helpfulness=3, correctness=3, coherence=4, complexity=1, verbosity=1)
    _jsonl(hs / "train.jsonl.gz", [{"prompt": f"Q{i % 4}", "response": f"A{i}", **ratings,
                                    "helpfulness": i % 5} for i in range(20)]
           + [{"prompt": "Q0", "response": "  ", **ratings}])
    _jsonl(hs / "validation.jsonl.gz", [{"prompt": f"V{i}", "response": f"B{i}", **ratings,
                                         "helpfulness": 4 - i % 5} for i in range(6)]
           + [{"prompt": "Q3", "response": "leaks", **ratings}])
    # HuggingFaceH4/ultrafeedback_binarized: data/<split>-00000-of-00001.parquet.
    uf = root / "ultrafeedback_binarized"
    (uf / "data").mkdir(parents=True)
    for split, n in (("train_prefs", 8), ("test_prefs", 3), ("train_sft", 2), ("test_gen", 2)):
        recs = []
        for i in range(n):
            ctx = [{"role": "user", "content": f"{split} prompt {i}"}]
            if i == 1:
                ctx = ctx + [{"role": "assistant", "content": "earlier"}, {"role": "user", "content": "more?"}]
            recs.append({"prompt": ctx[0]["content"], "prompt_id": f"{split}-{i}",
                         "chosen": ctx + [{"role": "assistant", "content": f"good {i}"}],
                         "rejected": ctx + [{"role": "assistant", "content": f"bad {i}"}],
                         "messages": ctx + [{"role": "assistant", "content": f"good {i}"}],
                         "score_chosen": 8.5 if i != 2 else 6.0, "score_rejected": 3.0 if i != 2 else 6.0})
        pl.DataFrame(recs).write_parquet(uf / "data" / f"{split}-00000-of-00001.parquet")
    # PKU-Alignment/PKU-SafeRLHF: data/<Model>/{train,test}.jsonl, configs in the README.
    pku = root / "PKU-SafeRLHF"
    for model, k in (("Alpaca-7B", 0), ("Alpaca2-7B", 100)):
        for split, n in (("train", 6), ("test", 2)):
            _jsonl(pku / "data" / model / f"{split}.jsonl", [
                {"prompt": f"{model} {split} q{i}", "response_0": f"r0-{k + i}", "response_1": f"r1-{k + i}",
                 "is_response_0_safe": True, "is_response_1_safe": False,
                 "response_0_severity_level": 0, "response_1_severity_level": (i % 3) + 1 if i else 0,
                 "better_response_id": 0, "safer_response_id": 0} for i in range(n)])
    (pku / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/*/train.jsonl\n"
        "  - split: test\n    path: data/*/test.jsonl\n- config_name: alpaca-7b\n  data_files:\n"
        "  - split: train\n    path: data/Alpaca-7B/train.jsonl\n  - split: test\n    path: data/Alpaca-7B/test.jsonl\n"
        "---\n# PKU-SafeRLHF (fixture)\n")
    # Anthropic/hh-rlhf: <subset>/{train,test}.jsonl.gz, chosen with data_dir.
    hh = root / "hh-rlhf"
    for subset in ("harmless-base", "helpful-base"):
        for split, n in (("train", 5), ("test", 2)):
            recs = [{"chosen": _dialogue(f"{subset} {split} {i}?", f"fine {i}"),
                     "rejected": _dialogue(f"{subset} {split} {i}?", f"rude {i}")} for i in range(n)]
            if split == "train":
                recs.append({"chosen": _dialogue("a", "b", "c", "kind"), "rejected": _dialogue("a", "b", "c", "mean")})
                recs.append({"chosen": _dialogue("x", "y"), "rejected": _dialogue("z", "w")})
            _jsonl(hh / subset / f"{split}.jsonl.gz", recs)
    return {"nvidia/HelpSteer": hs, "HuggingFaceH4/ultrafeedback_binarized": uf,
            "PKU-Alignment/PKU-SafeRLHF": pku, "Anthropic/hh-rlhf": hh}


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run ``rmpipe <args>`` in-process from a fresh project folder (an empty ``params.yaml``:
    the defaults, as a project that sets nothing); returns the result."""
    from rmpipe.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("")
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return run
