"""The paper's datasets through ``datasets.load_dataset`` (docs/method.md, "Source schemas").

Every rating becomes "higher is better". ``prepare.source.path`` points the same
``load_dataset`` call at a local folder laid out like the hub repository (offline use, tests).
By default a dataset's train split is loaded with its own test split (kept clean and fully
observed); ``prepare.source.split`` loads one split only, which then goes 60/20/20.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from pipeline.config import SourceParams
from pipeline.errors import RmpipeError
from stages.prepare.rows import Drops, Loaded, context_prompt, frame, hh_comparison, is_blank


def helpsteer_rows(records: Iterable[dict], tag: str, drops: Drops) -> list[dict]:
    """One row per response; rating = ``helpfulness`` (0-4)."""
    rows = []
    for rec in records:
        if is_blank(rec["prompt"]) or is_blank(rec["response"]):
            drops.add("empty prompt or response")
        elif rec.get("helpfulness") is None:
            drops.add("missing helpfulness")
        else:
            rows.append({"prompt": rec["prompt"], "response": rec["response"],
                         "rating": float(rec["helpfulness"]), "comparison_id": None})
    return rows


def ultrafeedback_rows(records: Iterable[dict], tag: str, drops: Drops) -> list[dict]:
    """``chosen``/``rejected`` message lists -> (context, last assistant reply), each scored
    pointwise by ``score_chosen``/``score_rejected`` (1-10). The two share a comparison_id
    where the scores differ (the higher is preferred)."""
    rows = []
    for i, rec in enumerate(records):
        pair = []
        for side in ("chosen", "rejected"):
            msgs, score = rec[side], rec[f"score_{side}"]
            if not msgs or msgs[-1]["role"] != "assistant" or len(msgs) < 2:
                drops.add(f"{side} does not end with an assistant reply")
            elif is_blank(msgs[-1]["content"]) or is_blank(msgs[0]["content"]):
                drops.add("empty prompt or response")
            elif score is None:
                drops.add(f"missing score_{side}")
            else:
                pair.append({"prompt": context_prompt(msgs[:-1]), "response": msgs[-1]["content"],
                             "rating": float(score), "comparison_id": None})
        if len(pair) == 2 and pair[0]["rating"] != pair[1]["rating"] and pair[0]["prompt"] == pair[1]["prompt"]:
            for row in pair:
                row["comparison_id"] = f"{tag}:{rec.get('prompt_id') or i}"
        rows += pair
    return rows


def pku_rows(records: Iterable[dict], tag: str, drops: Drops) -> list[dict]:
    """``response_0``/``response_1`` with severity 0-3, reversed: rating = 3 - severity, so
    higher is safer. Paired where the severities differ."""
    rows = []
    for i, rec in enumerate(records):
        pair = []
        for k in (0, 1):
            response, sev = rec[f"response_{k}"], rec.get(f"response_{k}_severity_level")
            if is_blank(rec["prompt"]) or is_blank(response):
                drops.add("empty prompt or response")
            elif sev is None:
                drops.add("missing severity level")
            else:
                pair.append({"prompt": rec["prompt"], "response": response,
                             "rating": 3.0 - float(sev), "comparison_id": None})
        if len(pair) == 2 and pair[0]["rating"] != pair[1]["rating"]:
            for row in pair:
                row["comparison_id"] = f"{tag}:{i}"
        rows += pair
    return rows


def hh_rows(records: Iterable[dict], tag: str, drops: Drops) -> list[dict]:
    """Whole dialogues -> shared context + final replies (chosen 1, rejected 0)."""
    rows = []
    for i, rec in enumerate(records):
        rows += hh_comparison(rec["chosen"], rec["rejected"], f"{tag}:{i}", drops)
    return rows


@dataclass(frozen=True)
class HubSpec:
    train: str
    test: str
    licence: str
    scale: tuple[float, float]
    rows: Callable
    note: str
    config_is_data_dir: bool = False


HUB = {
    "nvidia/HelpSteer": HubSpec("train", "validation", "CC-BY-4.0", (0.0, 4.0), helpsteer_rows,
                                "rating = helpfulness (0-4)"),
    "HuggingFaceH4/ultrafeedback_binarized": HubSpec(
        "train_prefs", "test_prefs", "MIT (scores from GPT-4, not people)", (1.0, 10.0),
        ultrafeedback_rows, "rating = score_chosen / score_rejected (1-10), each pointwise"),
    "PKU-Alignment/PKU-SafeRLHF": HubSpec(
        "train", "test", "CC-BY-NC-4.0", (0.0, 3.0), pku_rows,
        "rating = 3 - severity_level: reversed so that higher is safer; this also reverses who "
        "gets feedback, so PKU numbers are not comparable with the reference's"),
    "Anthropic/hh-rlhf": HubSpec("train", "test", "MIT", (0.0, 1.0), hh_rows,
                                 "rating 1 = chosen, 0 = rejected (final Assistant replies)",
                                 config_is_data_dir=True),
}


def load_hub(src: SourceParams, where: str = "params") -> Loaded:
    if src.name not in HUB:
        raise RmpipeError(f"{where}: prepare.source.name: unknown hub dataset {src.name!r} "
                          f"(expected one of {', '.join(HUB)})")
    import datasets
    from tqdm.auto import tqdm

    spec = HUB[src.name]
    target = src.path or src.name
    kwargs = {"data_dir": src.config} if spec.config_is_data_dir else {"name": src.config}
    wanted = [(src.split, None)] if src.split else [(spec.train, "train"), (spec.test, "test")]
    drops, rows = Drops(), []
    for split, role in wanted:
        try:
            ds = datasets.load_dataset(target, split=split, **{k: v for k, v in kwargs.items() if v})
        except Exception as exc:  # no network, no such split/config, damaged files
            raise RmpipeError(f"{target}: load_dataset failed for split {split!r} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        records = tqdm(ds, total=len(ds), desc=f"{src.name}:{split}", unit="rows",
                       disable=len(ds) < 20000, leave=False)
        part = spec.rows(records, f"{src.name}:{split}", drops)
        if role:
            for row in part:
                row["source_split"] = role
        rows += part
    name = f"hub:{src.name}" + (f" ({src.config})" if src.config else "") + (f" [{src.split}]" if src.split else "")
    return Loaded(frame(rows), name, spec.licence, spec.scale, spec.note, dict(drops), where=target)
