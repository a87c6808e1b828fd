"""The real labelled sets in ``../shared/data`` (read in place, never copied).

Pairwise sets (hh-rlhf, PandaLM, LLMBar): every comparison without a tie gives two rows
(preferred rating 1, other 0) sharing a ``comparison_id``. Graded sets (arena-bench-v1,
wmt-mqm-ted-ende): one row per response with its grade. ``group_id`` is always the prompt. One
split each, so they go 60/20/20.
The location is ``$RMPIPE_SHARED_DATA`` or ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

from pipeline.errors import RmpipeError
from stages.prepare.rows import Drops, Loaded, comparison, frame, hh_comparison, is_blank

REPO = Path(__file__).resolve().parents[2]


def shared_root() -> Path:
    env = os.environ.get("RMPIPE_SHARED_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


def _need(path: Path) -> Path:
    if not path.exists():
        raise RmpipeError(f"{path}: shared data not found (set RMPIPE_SHARED_DATA to the folder "
                          "that holds hh-rlhf/, pandalm-testset/, llmbar/, arena-bench-v1/ and wmt-mqm-ted-ende/)")
    return path


def _read_json(path: Path):
    try:
        return json.loads(_need(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RmpipeError(f"{path}: not valid UTF-8 JSON ({exc})") from None


def hh_harmless(root: Path) -> Loaded:
    """hh-rlhf harmless-base (test split of the original, 2,312 comparisons)."""
    path = _need(root / "hh-rlhf" / "harmless-base" / "test.jsonl.gz")
    drops, rows = Drops(), []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            rec = json.loads(line)
            rows += hh_comparison(rec["chosen"], rec["rejected"], f"hh-harmless:{i}", drops)
    return Loaded(frame(rows), "shared:hh-rlhf (harmless-base, test)", "MIT (Anthropic, 2022)",
                  (0.0, 1.0), "rating 1 = the crowdworker's more harmless reply, 0 = the other",
                  dict(drops), where=str(path))


def majority(votes) -> int | None:
    """The value at least two of three annotators gave (None: all three differ)."""
    for v in set(votes):
        if list(votes).count(v) >= 2:
            return v
    return None


def pandalm(root: Path) -> Loaded:
    """PandaLM test set: majority vote of three annotators (1: response1, 2: response2,
    0: tie). Ties and votes without a majority are dropped and counted."""
    path = root / "pandalm-testset" / "testset-v1.json"
    drops, rows = Drops(), []
    for rec in _read_json(path):
        prompt = "\n\n".join(t for t in (rec["instruction"], rec.get("input") or "") if t.strip())
        r1, r2 = rec["response1"], rec["response2"]
        if not isinstance(r1, str) or not isinstance(r2, str):
            drops.add("response is not text (JSON true)")
            continue
        if not r1.strip() or not r2.strip():
            drops.add("empty response")
            continue
        vote = majority([rec["annotator1"], rec["annotator2"], rec["annotator3"]])
        if vote is None:
            drops.add("no majority among the three annotators")
            continue
        if vote == 0:
            drops.add("tie (majority voted 0)")
            continue
        better, worse = (r1, r2) if vote == 1 else (r2, r1)
        rows += comparison(prompt, better, worse, f"pandalm:{rec['idx']}", drops)
    return Loaded(frame(rows), "shared:pandalm (test set v1, majority of 3 annotators)",
                  "Apache-2.0 (WeOpenML/PandaLM)", (0.0, 1.0),
                  "rating 1 = the majority's better response, 0 = the other", dict(drops),
                  where=str(path))


LLMBAR_FILES = ("LLMBar/Natural", "LLMBar/Adversarial/Neighbor", "LLMBar/Adversarial/GPTInst",
                "LLMBar/Adversarial/GPTOut", "LLMBar/Adversarial/Manual", "Processed/MT-Bench",
                "Processed/FairEval", "Processed/LLMEval^2")


def llmbar(root: Path) -> Loaded:
    """All eight LLMBar files: ``label`` 1 or 2 marks the better of ``output_1``/``output_2``."""
    drops, rows = Drops(), []
    for sub in LLMBAR_FILES:
        path = root / "llmbar" / sub / "dataset.json"
        for i, rec in enumerate(_read_json(path)):
            if rec.get("label") not in (1, 2):
                drops.add("label not 1 or 2")
                continue
            a, b = rec["output_1"], rec["output_2"]
            better, worse = (a, b) if rec["label"] == 1 else (b, a)
            rows += comparison(rec["input"], better, worse, f"llmbar:{sub}:{i}", drops)
    return Loaded(frame(rows), "shared:llmbar (8 files: LLMBar Natural/Adversarial, MT-Bench, "
                  "FairEval, LLMEval^2)", "MIT (princeton-nlp/LLMBar); MT-Bench judgments "
                  "CC-BY-4.0; FairEval and LLMEval^2 upstream licences not stated", (0.0, 1.0),
                  "rating 1 = the labelled better output, 0 = the other", dict(drops),
                  where=str(root / "llmbar"))


SHARED = {"hh-rlhf": hh_harmless, "pandalm": pandalm, "llmbar": llmbar}
ALIASES = {"hh-rlhf-harmless": "hh-rlhf", "harmless-base": "hh-rlhf", "pandalm-testset": "pandalm"}


def load_shared(name: str | None, where: str = "params", split=None, audit_share: float | None = None,
                seed: int = 0) -> Loaded:
    """A shared set by name; Coat splits by shopper itself (``split``) and draws its audit
    (``audit_share`` of each shopper's random ratings, ``seed``): :mod:`stages.prepare.coat`."""
    key = ALIASES.get(name or "", name)
    if key == "coat":
        from stages.prepare.coat import load_coat

        return load_coat(shared_root(), split, audit_share, seed)
    if key not in SHARED:
        raise RmpipeError(f"{where}: prepare.source.name: unknown shared set {name!r} "
                          f"(expected one of {', '.join([*SHARED, 'coat'])})")
    return SHARED[key](shared_root())


# --- graded sets: one row per response, group_id = the prompt ---------------------------------
def _jsonl_gz(path: Path):
    with gzip.open(_need(path), "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _grade(value) -> float | None:
    """A judge's grade as a number (the files hold strings like ``'7'``; None if missing)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def arena_bench(root: Path) -> Loaded:
    """arena-bench-v1: 300 Chatbot Arena prompts x 15 models, each answer graded 1-10 by GPT-4
    against a reference. Answers joined to judgments on (question_id, model); answers without
    a parsable grade, empty answers and prompts are dropped and counted. ``policy`` names the
    model that answered: what a serving log records, and a propensity covariate."""
    base = root / "arena-bench-v1"
    prompts = {q["question_id"]: q["turns"][0] for q in _jsonl_gz(base / "question.jsonl.gz")}
    grades = {}
    for path in sorted(_need(base / "model_judgment").glob("*.jsonl.gz")):
        for rec in _jsonl_gz(path):
            grades[(rec["question_id"], rec["model"])] = _grade(rec.get("score"))
    drops, rows = Drops(), []
    for path in sorted(_need(base / "model_answer").glob("*.jsonl.gz")):
        for rec in _jsonl_gz(path):
            key = (rec["question_id"], rec["model_id"])
            prompt, answer = prompts.get(key[0]), rec["choices"][0]["turns"][0]
            grade = grades.get(key)
            if key not in grades:
                drops.add("no judgment for the answer")
            elif grade is None:
                drops.add("grade missing (the judge's text did not parse)")
            elif is_blank(prompt):
                drops.add("empty prompt")
            elif is_blank(answer):
                drops.add("empty response")
            else:
                rows.append({"prompt": prompt, "response": answer, "rating": grade,
                             "comparison_id": None, "policy": rec["model_id"]})
    return Loaded(frame(rows), "shared:arena-bench-v1 (300 Arena prompts x 15 models, GPT-4 "
                  "grades 1-10)", "Apache-2.0 (lmarena/arena-hard-auto)", (1.0, 10.0),
                  "rating = GPT-4's 1-10 grade against a GPT-4 reference (an AI rating)",
                  dict(drops), where=str(base))


_SPAN = re.compile(r"</?v>")


def _tsv_lines(path: Path):
    with gzip.open(_need(path), "rt", encoding="utf-8", newline="") as fh:
        next(fh)  # header
        for line in fh:
            yield line.rstrip("\n")


def wmt_mqm(root: Path) -> Loaded:
    """WMT21 MQM, TED talks en->de: 529 segments x 14 translations (13 systems and the human
    reference), rating = the raters' mean MQM score (0 perfect, down to -25; higher is better,
    so used as is). Texts come from the error-span file with the ``<v>`` marks stripped;
    unrated segments are dropped and counted. ``policy`` names the system that translated."""
    base = root / "wmt-mqm-ted-ende"
    texts: dict[tuple[str, str], tuple[str, str]] = {}
    for line in _tsv_lines(base / "mqm_ted_ende.tsv.gz"):
        system, _doc, _doc_id, seg, _rater, source, target = line.split("\t")[:7]
        system = "ref-A" if system == "ref" else system  # the scores file's name for it
        texts.setdefault((system, seg), (_SPAN.sub("", source), _SPAN.sub("", target)))
    drops, rows = Drops(), []
    for line in _tsv_lines(base / "mqm_ted_ende.avg_seg_scores.tsv.gz"):
        system, rest = line.split("\t")
        score, seg = rest.split(" ")
        if score == "None":
            drops.add("segment not rated")
            continue
        if (system, seg) not in texts:
            drops.add("no text for the rated segment")
            continue
        source, target = texts[(system, seg)]
        if is_blank(source) or is_blank(target):
            drops.add("empty source or translation")
            continue
        rows.append({"prompt": f"Translate to German: {source}", "response": target,
                     "rating": float(score), "comparison_id": None, "policy": system})
    return Loaded(frame(rows), "shared:wmt-mqm-ted-ende (WMT21 MQM, TED en->de, 14 translations "
                  "per segment)", "Apache-2.0 (google/wmt-mqm-human-evaluation)", (-25.0, 0.0),
                  "rating = mean MQM score of professional raters (0 = no errors; higher is better)",
                  dict(drops), where=str(base))


SHARED.update({"arena-bench-v1": arena_bench, "wmt-mqm-ted-ende": wmt_mqm})
ALIASES.update({"arena-bench": "arena-bench-v1", "arena": "arena-bench-v1", "wmt-mqm": "wmt-mqm-ted-ende",
                "wmt": "wmt-mqm-ted-ende"})
