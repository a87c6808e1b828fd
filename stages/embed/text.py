"""Prompt-response pairs to token ids, the way the reference does it (docs/method.md).

Chat models get the sequence a policy's sample is: the prompt's turns through the tokenizer's
chat template with the generation prompt, then the response, then the end-of-turn token
(``<|im_end|>``, ``<|eot_id|>``, ...), and nothing after it. Each piece is tokenised on its own
(``add_special_tokens=False``) and the ids are joined, as OpenRLHF and VERL join the prompt's ids
and the sampled ids, so last-token pooling reads the end-of-turn token, the position those
frameworks read a reward at (docs/rlhf.md). Encoders without a template get the tokenizer's own
pair encoding of ``(prompt, response)``. An over-long input loses the *front* of the prompt first
— the response and the latest turns are what a reward is about — and only if the response alone
still does not fit is its tail cut. Cuts are made on token boundaries of the content (via offset
mappings) and the whole text is re-rendered, so the template's own tokens and the end-of-turn
token always survive.
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
        self.end_of_turn = end_of_turn(tokenizer) if chat_template else None
        self._eot_id = tokenizer.convert_tokens_to_ids(self.end_of_turn) if chat_template else None

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
        if not turns:
            return [], None
        if self.chat_template:
            prompts = tok([self.prompt_text(t) for t in turns], add_special_tokens=False)["input_ids"]
            answers = tok(responses, add_special_tokens=False)["input_ids"]
            return [p + r + [self._eot_id] for p, r in zip(prompts, answers)], None
        enc = tok([_flatten(t) for t in turns], responses, truncation=False)
        return enc["input_ids"], enc.get("token_type_ids")

    def _render(self, turns: list[dict], response: str):
        ids, types = self._render_many([turns], [response])
        return ids[0], (types[0] if types is not None else None)

    def prompt_text(self, turns: list[dict]) -> str:
        """The prompt as a policy is given it: the template with the generation prompt."""
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    def chat_text(self, turns: list[dict], response: str) -> str:
        """The canonical text of a pair (what the ids decode to)."""
        return self.prompt_text(turns) + response + self.end_of_turn

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


PROBE = "rmpipe-probe-7d1c"


def end_of_turn(tokenizer) -> str:
    """The token that ends an assistant turn, where a policy stops sampling: the first special
    token the chat template writes after an assistant message's content, else the tokenizer's
    eos token. One token, or one line saying why not."""
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": PROBE}]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    after = text[text.rfind(PROBE) + len(PROBE):] if PROBE in text else ""
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    specials |= set(tokenizer.all_special_tokens)
    found = sorted((after.find(s), -len(s), s) for s in specials if s and s in after)
    token = found[0][2] if found else tokenizer.eos_token
    if not token:
        raise RmpipeError(f"tokenizer of {tokenizer.name_or_path}: its chat template writes no special "
                          f"token after an assistant turn and it has no eos token, so there is no "
                          f"end-of-turn token to read the reward at; set chat_template: false")
    if len(tokenizer(token, add_special_tokens=False)["input_ids"]) != 1:
        raise RmpipeError(f"tokenizer of {tokenizer.name_or_path}: end-of-turn {token!r} is not one token")
    return token


def _flatten(turns: list[dict]) -> str:
    """A multi-turn prompt as one text for an encoder without a chat template."""
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)
