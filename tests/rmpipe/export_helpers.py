"""A small project on disk for export tests (built-in table, a backbone, a fitted head) and the
transformers-only scoring that the exported folders must agree with."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import BackboneSpec, EmbedParams, EvaluateParams, load_params
from pipeline.table import canonical_prompt
from stages.embed.run import embed
from stages.fit.run import fit
from rmpipe.score import score
from stages.prepare.run import prepare
from tests.stages.fit.conftest import fast_fit

REPO = Path(__file__).resolve().parents[2]

# short pairs (no cut at max_tokens), of different lengths so that padding matters, one multi-turn
PAIRS = [
    ("Hi", "Hello!"),
    ("What is 2 + 2?", "4"),
    ("Explain recursion to a child.", "It is when something is defined by a smaller copy of itself."),
    ([{"role": "user", "content": "Name my bakery."},
      {"role": "assistant", "content": "Rise and Shine?"},
      {"role": "user", "content": "Shorter, please."}], "Crumb."),
    ("Is the response helpful?", "yes " * 12),
    ("Translate: the cat sleeps.", "Le chat dort."),
]


def make_project(tmp_path: Path, backbone: str, spec: BackboneSpec | None, hidden=(), rows: int = 240,
                 method: str = "naive"):
    """``(params, head folder)``: ``rows`` built-in pairs embedded by ``backbone``, one head."""
    params = load_params(REPO / "params.yaml")
    source = dataclasses.replace(params.prepare.source, kind="builtin", rows=rows)
    # float32: the parity checks' tolerances are float32's (a bfloat16 export is bfloat16 end to end)
    specs = {k: dataclasses.replace(v, dtype="float32") for k, v in params.backbones.items()}
    if spec is not None:
        specs[backbone] = spec
    params = dataclasses.replace(
        params, dataset="x", data_dir=str(tmp_path / "data"), backbones=specs,
        prepare=dataclasses.replace(params.prepare, source=source),
        embed=EmbedParams(backbones=(backbone,), store_dir=str(tmp_path / "emb"),
                          models_dir=str(REPO / "cache" / "models")),
        fit=dataclasses.replace(fast_fit(hidden=tuple(hidden), max_epochs=4),
                                heads_dir=str(tmp_path / "heads"), methods=(method,)),
        evaluate=EvaluateParams(reports_dir=str(tmp_path / "reports")))
    prepare(params)
    embed(params, backbone, progress=False)
    head = fit(params, backbone, [method], progress=False, log=lambda _: None)[method]
    return params, head


def pairs_file(tmp_path: Path, pairs=PAIRS) -> Path:
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": canonical_prompt(p), "response": r} for p, r in pairs]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rmpipe_logits(params, head, pairs, tmp_path: Path) -> np.ndarray:
    """``rmpipe score``'s logits for ``pairs`` (embedding what the store lacks)."""
    out, _ = score(params, head, pairs_file(tmp_path, pairs), tmp_path / "rewards.parquet", progress=False)
    return pl.read_parquet(out)["logit"].to_numpy()


def turns(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def chat_batch(tok, pairs, side: str):
    """The exported folder's documented input: chat-templated text, no added special tokens."""
    tok.padding_side = side
    texts = [tok.apply_chat_template([*turns(p), {"role": "assistant", "content": r}], tokenize=False)
             for p, r in pairs]
    return tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")


def flat(prompt) -> str:
    t = turns(prompt)
    if len(t) == 1 and t[0]["role"] == "user":
        return t[0]["content"]
    return "\n\n".join(f"{x['role']}: {x['content']}" for x in t)


def pair_batch(tok, pairs, side: str):
    """The documented input for an encoder: the tokenizer's pair encoding."""
    tok.padding_side = side
    return tok([flat(p) for p, _ in pairs], [r for _, r in pairs], padding=True, return_tensors="pt")


def last_real(logits, mask) -> np.ndarray:
    """Per-token logits (B, T, 1) read at each row's last real token (what VERL does)."""
    idx = mask.shape[1] - 1 - mask.flip(dims=[1]).argmax(dim=1)
    return logits[range(len(idx)), idx, 0].detach().numpy()
