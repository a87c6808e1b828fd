"""Prompt-response pairs to token ids, the way the reference does it (docs/method.md).

Chat models get the tokenizer's chat template over ``[user: prompt, assistant: response]`` (a
multi-turn prompt keeps its turns); encoders without a template get the tokenizer's own pair
encoding of ``(prompt, response)``. An over-long input loses the *front* of the prompt first —
the response and the latest turns are what a reward is about — and only if the response alone
still does not fit is its tail cut. Cuts are made on token boundaries of the content (via offset
mappings) and the whole text is re-rendered, so the template's own tokens always survive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from pipeline.errors import RmpipeError
from pipeline.table import prompt_turns


@dataclass
class Encoded:
    """Token ids per pair and how many pairs had to be cut."""

    ids: list[list[int]]
    type_ids: list[list[int]] | None = None  # pair encoding's segment ids (BERT), else None
    prompt_cut: int = 0
    response_cut: int = 0
    tokens: int = field(init=False)

    def __post_init__(self):
        self.tokens = sum(len(i) for i in self.ids)


class PairEncoder:
    """Renders pairs to ids with one tokenizer, one mode (template or pair), one length limit."""

    def __init__(self, tokenizer, max_tokens: int, chat_template: bool):
        self.tokenizer = tokenizer
        tokenizer.model_max_length = 1 << 40  # we truncate, to our rule: no warning for long rows
        self.max_tokens = max_tokens
        self.chat_template = chat_template
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise RmpipeError("chat_template: true, but the tokenizer has no chat template; "
                              "set chat_template: false to use its pair encoding")

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> Encoded:
        """Ids for every pair: one batched call for the common case, a per-row loop to cut the
        few that are too long."""
        turns = [prompt_turns(p) for p in prompts]
        ids, types = self._render_many(turns, list(responses))
        prompt_cut = response_cut = 0
        for i, row in enumerate(ids):
            if len(row) > self.max_tokens:
                ids[i], types_i, cut_p, cut_r = self._fit(turns[i], responses[i])
                if types is not None:
                    types[i] = types_i
                prompt_cut += cut_p
                response_cut += cut_r
        return Encoded(ids, types, prompt_cut, response_cut)

    # --- rendering -----------------------------------------------------------------------
    def _render_many(self, turns: list[list[dict]], responses: list[str]):
        tok = self.tokenizer
        if self.chat_template:
            texts = [self._chat_text(t, r) for t, r in zip(turns, responses)]
            return tok(texts, add_special_tokens=False)["input_ids"], None
        enc = tok([_flatten(t) for t in turns], responses, truncation=False)
        return enc["input_ids"], enc.get("token_type_ids")

    def _render(self, turns: list[dict], response: str):
        ids, types = self._render_many([turns], [response])
        return ids[0], (types[0] if types is not None else None)

    def _chat_text(self, turns: list[dict], response: str) -> str:
        return self.tokenizer.apply_chat_template(
            [*turns, {"role": "assistant", "content": response}], tokenize=False)

    # --- truncation ----------------------------------------------------------------------
    def _fit(self, turns: list[dict], response: str):
        """Cut the front of the prompt, then the tail of the response, until the pair fits."""
        turns = [dict(t) for t in turns]
        ids, types = self._render(turns, response)
        cut_p = cut_r = 0
        while len(ids) > self.max_tokens and any(t["content"] for t in turns):
            turns = self._drop_front(turns, len(ids) - self.max_tokens)
            ids, types = self._render(turns, response)
            cut_p = 1
        while len(ids) > self.max_tokens and response:
            response = self._drop_tail(response, len(ids) - self.max_tokens)
            ids, types = self._render(turns, response)
            cut_r = 1
        if len(ids) > self.max_tokens:
            raise RmpipeError(f"max_tokens {self.max_tokens} is below the template's own length "
                              f"({len(ids)} tokens with empty texts)")
        return ids, types, cut_p, cut_r

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["offset_mapping"]

    def _drop_front(self, turns: list[dict], n: int) -> list[dict]:
        """Remove ``n`` content tokens from the front, across turns; emptied turns (except the
        last, which keeps the user role in place) are dropped."""
        for t in turns:
            if n <= 0:
                break
            offsets = self._offsets(t["content"])
            if len(offsets) <= n:
                n -= len(offsets)
                t["content"] = ""
            else:
                t["content"] = t["content"][offsets[n][0]:]
                n = 0
        kept = [t for t in turns[:-1] if t["content"]]
        return [*kept, turns[-1]]

    def _drop_tail(self, text: str, n: int) -> str:
        offsets = self._offsets(text)
        keep = len(offsets) - max(n, 1)
        return text[:offsets[keep][0]] if keep > 0 else ""


def _flatten(turns: list[dict]) -> str:
    """A multi-turn prompt as one text for an encoder without a chat template."""
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)
