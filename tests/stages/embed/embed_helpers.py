"""Builders for stage one's tests (imported by conftest and tests; no fixtures here)."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import polars as pl

from pipeline.config import load_params
from pipeline.store import EmbeddingStore
from pipeline.table import canonical_prompt, make_pair_id, read_table, write_table
from stages.embed.run import embed

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} [SEP] "
                 "{% endfor %}{% if add_generation_prompt %}<assistant> {% endif %}")
# SmolLM2-Instruct's template, character for character: ChatML with a default system turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}")
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
WORDS = ("reward model feedback user response prompt helpful harmless answer question the a of "
         "to and is in that it for on with as was be by this are or not").split()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short and long pairs, some multi-turn, some with an over-long response."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        if i % 7 == 3:
            prompt = canonical_prompt([{"role": "user", "content": words(rng, 20)},
                                       {"role": "assistant", "content": words(rng, 15)},
                                       {"role": "user", "content": f"q{i} " + words(rng, 10)}])
        else:
            prompt = f"q{i} " + words(rng, rng.choice([1, 5, 30, 120, 400]))
        response = words(rng, rng.choice([1, 10, 60, 300 if i % 11 == 5 else 20]))
        pairs.append((prompt, response))
    return pairs


def write_feedback(path: Path, pairs: list[tuple[str, str]]) -> Path:
    """A valid feedback table; every third pair logged twice (pair_id is not unique per row)."""
    rows = pairs + pairs[::3]
    df = pl.DataFrame({
        "pair_id": [make_pair_id(p, r) for p, r in rows],
        "prompt": [p for p, _ in rows],
        "response": [r for _, r in rows],
        "group_id": [f"g{i % 17}" for i in range(len(rows))],
        "split": ["train"] * len(rows),
        "observed": [i % 2 == 0 for i in range(len(rows))],
        "feedback": [1 if i % 2 == 0 else None for i in range(len(rows))],
    }, schema_overrides={"feedback": pl.Int8})
    return write_table(df, path)


def write_params(root: Path, model: Path | str, *, pooling: str = "last", chat: bool = True,
                 max_tokens: int = 128, commit_rows: int = 16, batch_tokens: int = 2048) -> Path:
    path = root / "params.yaml"
    path.write_text(textwrap.dedent(f"""\
        dataset: t
        data_dir: {root / 'data'}
        embed:
          backbones: [tiny]
          store_dir: {root / 'cache' / 'embeddings'}
          models_dir: {root / 'cache' / 'models'}
          commit_rows: {commit_rows}
        backbones:
          tiny:
            model: {model}
            pooling: {pooling}
            max_tokens: {max_tokens}
            chat_template: {str(chat).lower()}
            dtype: float32
            backend: hf
            batch_tokens: {batch_tokens}
            device: cpu
        """))
    return path


def all_ids(params) -> list[str]:
    """The table's pair ids, each once, in table order."""
    return read_table(params.table_path)["pair_id"].unique(maintain_order=True).to_list()


def reference_embeddings(root: Path, model: Path | str, n: int = 60) -> dict:
    """``make_pairs(n)``'s embeddings from one uninterrupted single writer in a project at
    ``root``: what an interrupted, raced or repaired store must end up holding."""
    write_feedback(root / "data" / "t" / "feedback.parquet", make_pairs(n))
    params = load_params(write_params(root, model, commit_rows=1000))
    embed(params, "tiny", progress=False)
    ids = all_ids(params)
    return dict(zip(ids, EmbeddingStore(params.store_path("tiny")).read(ids)))


def slow_commits(seconds: float) -> str:
    """Python source that slows every store commit by ``seconds``: prefixed to a run in a
    subprocess, so a test can kill it, or race a second one, mid-way."""
    return textwrap.dedent(f"""
        import time
        from pipeline import store
        _append = store.EmbeddingStore.append
        def _slow_append(self, *args, **kwargs):
            written = _append(self, *args, **kwargs)
            time.sleep({float(seconds)!r})
            return written
        store.EmbeddingStore.append = _slow_append
    """)
