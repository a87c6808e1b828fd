"""Every source mapping, on real files: hub layouts through datasets.load_dataset offline, the
shared human-labelled sets in ../shared/data, a user's logs in four formats, the built-in world."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from pipeline.config import Params, PrepareParams, SourceParams
from pipeline.table import make_pair_id
from stages.prepare.builtin import generate
from stages.prepare.run import build
from stages.prepare.shared import shared_root
from stages.prepare.sources import load_source


def hub(name, path, **kw):
    return load_source(SourceParams(kind="hub", name=name, path=str(path), **kw))


# --- hub -----------------------------------------------------------------------------------
def test_helpsteer_maps_helpfulness_and_keeps_its_validation_as_test(hub_dirs):
    got = hub("nvidia/HelpSteer", hub_dirs["nvidia/HelpSteer"])
    df = got.frame
    assert got.dropped == {"empty prompt or response": 1}
    assert df.height == 20 + 7
    train = df.filter(pl.col("source_split") == "train")
    assert train["rating"].to_list() == [float(i % 5) for i in range(20)]
    assert set(df.filter(pl.col("source_split") == "test")["prompt"]) == {f"V{i}" for i in range(6)} | {"Q3"}
    assert got.scale == (0.0, 4.0) and got.licence == "CC-BY-4.0"


def test_helpsteer_prepared_drops_train_prompts_that_leak_into_test(hub_dirs):
    src = SourceParams(kind="hub", name="nvidia/HelpSteer", path=str(hub_dirs["nvidia/HelpSteer"]))
    df, report = build(Params(prepare=PrepareParams(source=src)))
    assert report["dropped"]["train row whose prompt is also in the source's test split"] == 5
    test = df.filter(pl.col("split") == "test")
    assert test.height == 7 and test["observed"].all() and (test["feedback"] == test["label"]).all()
    assert set(df["split"]) == {"train", "val", "test"} and report["straddling_groups"] == 0
    assert report["feedback"]["label_threshold"] == 2.0


def test_ultrafeedback_takes_the_last_assistant_turn_and_pairs_unequal_scores(hub_dirs):
    got = hub("HuggingFaceH4/ultrafeedback_binarized", hub_dirs["HuggingFaceH4/ultrafeedback_binarized"])
    df = got.frame
    assert df.height == 2 * (8 + 3)  # the sft/gen splits are not read
    row = df.filter(pl.col("response") == "good 0").row(0, named=True)
    assert row["prompt"] == "train_prefs prompt 0" and row["rating"] == 8.5
    multi = df.filter(pl.col("response") == "bad 1")["prompt"][0]
    assert json.loads(multi) == [{"content": "train_prefs prompt 1", "role": "user"},
                                 {"content": "earlier", "role": "assistant"},
                                 {"content": "more?", "role": "user"}]
    assert multi == json.dumps(json.loads(multi), sort_keys=True, separators=(",", ":"))
    tie = df.filter(pl.col("prompt") == "train_prefs prompt 2")
    assert tie["comparison_id"].null_count() == 2 and tie["rating"].to_list() == [6.0, 6.0]
    assert df.filter(pl.col("response") == "good 0")["comparison_id"][0] == \
        df.filter(pl.col("response") == "bad 0")["comparison_id"][0]


def test_pku_reverses_severity_and_reads_a_config(hub_dirs):
    path = hub_dirs["PKU-Alignment/PKU-SafeRLHF"]
    every = hub("PKU-Alignment/PKU-SafeRLHF", path).frame
    one = hub("PKU-Alignment/PKU-SafeRLHF", path, config="alpaca-7b").frame
    assert every.height == 2 * 2 * (6 + 2) and one.height == 2 * (6 + 2)
    assert one["prompt"].str.starts_with("Alpaca-7B").all()
    r = one.filter(pl.col("prompt") == "Alpaca-7B train q1").sort("response")
    assert r["rating"].to_list() == [3.0, 1.0]  # severity 0 -> 3 (safe), severity 2 -> 1
    assert r["comparison_id"].n_unique() == 1 and r["comparison_id"][0] is not None
    assert one.filter(pl.col("prompt") == "Alpaca-7B train q0")["comparison_id"].null_count() == 2


def test_hh_rlhf_reads_a_data_dir_and_splits_dialogues(hub_dirs):
    got = hub("Anthropic/hh-rlhf", hub_dirs["Anthropic/hh-rlhf"], config="harmless-base")
    df = got.frame
    assert got.dropped == {"chosen and rejected contexts differ": 1}
    assert df["prompt"].str.starts_with("helpful").sum() == 0
    assert df.height == 2 * (5 + 1 + 2)
    kind = df.filter(pl.col("response") == "kind").row(0, named=True)
    assert kind["rating"] == 1.0 and json.loads(kind["prompt"])[-1] == {"role": "user", "content": "c"}
    assert df.filter(pl.col("response") == "fine 0")["prompt"][0] == "harmless-base train 0?"


def test_hub_split_option_loads_one_split(hub_dirs):
    src = SourceParams(kind="hub", name="nvidia/HelpSteer", path=str(hub_dirs["nvidia/HelpSteer"]),
                       split="validation")
    df, report = build(Params(prepare=PrepareParams(source=src)))
    assert df.height == 7 and not report["split"]["source_test_split"]


# --- shared --------------------------------------------------------------------------------
needs_shared = pytest.mark.skipif(not shared_root().exists(), reason="../shared/data not present")


@needs_shared
def test_hh_rlhf_harmless_base_counts():
    got = load_source(SourceParams(kind="shared", name="hh-rlhf"))
    assert got.dropped == {"chosen and rejected contexts differ": 5, "empty response": 4}
    df = got.frame
    assert df.height == 2 * (2312 - 9)
    assert df.group_by("comparison_id").agg(pl.col("rating").sum())["rating"].eq(1.0).all()
    multi = df.filter(pl.col("prompt").str.starts_with("[{"))["prompt"][0]
    assert [t["role"] for t in json.loads(multi)][:2] == ["user", "assistant"]


@needs_shared
def test_pandalm_majority_vote_and_quirks():
    got = load_source(SourceParams(kind="shared", name="pandalm"))
    assert got.dropped == {"empty response": 54, "response is not text (JSON true)": 6,
                           "tie (majority voted 0)": 103}
    df = got.frame
    assert df.height == 2 * (999 - 54 - 6 - 103)
    raw = {r["idx"]: r for r in json.loads((shared_root() / "pandalm-testset/testset-v1.json").read_text())}
    for row in df.filter(pl.col("rating") == 1.0).head(50).iter_rows(named=True):
        rec = raw[int(row["comparison_id"].split(":")[1])]
        votes = [rec["annotator1"], rec["annotator2"], rec["annotator3"]]
        winner = max((1, 2), key=votes.count)
        assert row["response"] == rec[f"response{winner}"]
    wins = df.group_by("prompt", "response").agg(pl.col("rating").min().alias("lo"), pl.col("rating").max().alias("hi"))
    assert wins.filter(pl.col("lo") != pl.col("hi")).height > 100  # a response both wins and loses


@needs_shared
def test_llmbar_reads_all_eight_files():
    got = load_source(SourceParams(kind="shared", name="llmbar"))
    df = got.frame
    subsets = df["comparison_id"].str.split(":").list.get(1).unique().to_list()
    assert len(subsets) == 8
    assert df.height == 2 * (885 - sum(got.dropped.values()))
    assert got.dropped.get("identical responses") == 1


# --- file ----------------------------------------------------------------------------------
def _logs() -> pl.DataFrame:
    return pl.DataFrame({"q": [f"prompt {i % 7}" for i in range(40)], "a": [f"answer {i}" for i in range(40)],
                         "clicked": [i % 3 == 0 for i in range(40)],
                         "thumbs": [(i // 3) % 2 if i % 3 == 0 else None for i in range(40)],
                         "score": [float(i % 4) for i in range(40)]})


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "jsonl.gz", "csv"])
def test_logs_in_every_format_keep_logged_feedback(tmp_path, fmt):
    logs, path = _logs(), tmp_path / f"logs.{fmt}"
    if fmt == "parquet":
        logs.write_parquet(path)
    elif fmt == "csv":
        logs.write_csv(path)
    else:
        text = "".join(json.dumps(r) + "\n" for r in logs.iter_rows(named=True))
        path.write_bytes(gzip.compress(text.encode()) if fmt.endswith("gz") else text.encode())
    src = SourceParams(kind="file", path=str(path), columns={"prompt": "q", "response": "a",
                       "observed": "clicked", "feedback": "thumbs", "rating": "score"})
    df, report = build(Params(prepare=PrepareParams(source=src)))
    assert report["feedback"]["simulated"] is False
    assert df["observed"].to_list() == logs["clicked"].to_list()
    assert df["feedback"].to_list() == logs["thumbs"].to_list()
    assert df["propensity_true"].null_count() == df.height and df["label"].null_count() == df.height
    assert df["pair_id"][3] == make_pair_id("prompt 3", "answer 3")
    assert report["straddling_groups"] == 0 and set(df["split"]) == {"train", "val", "test"}


def test_logs_without_observed_are_simulated_from_their_rating(tmp_path):
    path = tmp_path / "rated.csv"
    _logs().select("q", "a", "score").rename({"q": "prompt", "a": "response", "score": "rating"}).write_csv(path)
    df, report = build(Params(prepare=PrepareParams(source=SourceParams(kind="file", path=str(path)))))
    assert report["feedback"]["simulated"] is True and df["label"].null_count() == 0


# --- builtin -------------------------------------------------------------------------------
def test_builtin_world_is_large_graded_and_deterministic():
    a, b, c = generate(12000, seed=0), generate(12000, seed=0), generate(200, seed=1)
    assert a == b and a[:200] != c
    df = pl.DataFrame(a)
    assert df.height >= 10000 and sorted(df["rating"].unique()) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert df["prompt"].n_unique() > 1000 and df["response"].n_unique() > 3000
    shares = df["rating"].value_counts()["count"] / df.height
    assert shares.min() > 0.15  # every level well represented
    top = df.filter(pl.col("rating") == 4)["response"]
    assert top.str.contains("(?i)sorry|silly|wasting").mean() < 0.1  # quality shows in content
    assert df.filter(pl.col("rating") == 0)["response"].str.contains("silly|wasting|yourself|everyone knows|own next").mean() > 0.5
