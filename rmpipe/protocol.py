"""What the reward server accepts: request bodies into (canonical prompt, response) pairs.

Two wire formats, both checked here so that a bad body is one line and a 4xx, never a crash:

- native: a JSON list of ``{"prompt": str | [{"role", "content"}...], "response": str}``;
- OpenRLHF's remote reward protocol (``--remote_rm_url``): ``{"query": [...], "prompts": [...],
  "labels": [...]}``, where each query is the policy's full decoded sequence (prompt as the policy
  saw it, then the generated response, special tokens kept). The response is the query after its
  prompt, with trailing end-of-sequence / padding markers removed; a prompt in ChatML
  (``<|im_start|>role\\n...<|im_end|>``) or Llama-3 (``<|start_header_id|>role<|end_header_id|>``)
  form is turned back into its chat turns, so the backbone templates it once, as in training (a
  lone user turn becomes its plain text, the same pair as in the store). ``labels`` are ignored:
  the reward model does not read them.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.table import canonical_prompt


class BadRequest(Exception):
    """A request the server refuses: ``status`` (400 or 413) and a one-line reason."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


# End markers of common chat tokenizers; the backbone's own eos/pad tokens are added at start-up.
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<eos>",
               "<end_of_turn>", "<|end|>", "<pad>", "[PAD]", "<|pad|>")

_CHATML = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n?", re.S)
_CHATML_OPEN = "<|im_start|>assistant\n"
_LLAMA3 = re.compile(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S)
_LLAMA3_OPEN = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{where}: not valid Unicode (a lone surrogate)") from None
    return value


def _prompt(value: Any, where: str) -> str:
    """A prompt as the store keys it (plain text, or canonical JSON of chat turns)."""
    if isinstance(value, list):
        if not value:
            raise BadRequest(f"{where}: an empty list of chat turns")
        for j, turn in enumerate(value):
            if not isinstance(turn, dict) or not {"role", "content"} <= turn.keys():
                raise BadRequest(f"{where}[{j}]: a chat turn needs 'role' and 'content'")
            _text(turn["role"], f"{where}[{j}].role")
            _text(turn["content"], f"{where}[{j}].content")
        return canonical_prompt(value)
    return _text(value, where)


def _list(body: dict, key: str, limit: int) -> list:
    value = body.get(key)
    if not isinstance(value, list):
        raise BadRequest(f"{key}: expected a list, got {type(value).__name__ if key in body else 'nothing'}")
    if not value:
        raise BadRequest(f"{key}: no items to score")
    if len(value) > limit:
        raise BadRequest(f"{key}: {len(value)} items, more than this server's limit of {limit} "
                         f"a request (--max-request-pairs)", status=413)
    return value


def native_pairs(body: Any, limit: int) -> tuple[list[str], list[str]]:
    """``[{"prompt", "response"}, ...]`` -> (prompts, responses)."""
    if not isinstance(body, list):
        raise BadRequest(f"body: expected a JSON list of {{prompt, response}} objects, got {type(body).__name__}")
    items = _list({"pairs": body}, "pairs", limit)
    prompts, responses = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"pairs[{i}]: expected an object with prompt and response")
        for key in ("prompt", "response"):
            if item.get(key) is None:
                raise BadRequest(f"pairs[{i}].{key}: missing")
        prompts.append(_prompt(item["prompt"], f"pairs[{i}].prompt"))
        responses.append(_text(item["response"], f"pairs[{i}].response"))
    return prompts, responses


def untemplate(prompt: str) -> str:
    """A chat-templated prompt (ChatML or Llama-3) back to canonical turns; else as it is."""
    for pattern, opener, bos in ((_CHATML, _CHATML_OPEN, ""), (_LLAMA3, _LLAMA3_OPEN, "<|begin_of_text|>")):
        text = prompt[len(bos):] if bos and prompt.startswith(bos) else prompt
        text = text[:-len(opener)] if text.endswith(opener) else text
        turns, end = [], 0
        for match in pattern.finditer(text):
            if match.start() != end:
                break
            turns.append({"role": match.group(1), "content": match.group(2)})
            end = match.end()
        if turns and end == len(text):
            if len(turns) == 1 and turns[0]["role"] == "user":
                return turns[0]["content"]
            return canonical_prompt(turns)
    return prompt


def split_query(query: str, prompt: str, markers: tuple[str, ...]) -> tuple[str, str]:
    """(prompt, response) of one OpenRLHF query: the response is what follows the prompt."""
    if not query.startswith(prompt):
        raise ValueError
    response = query[len(prompt):]
    stripped = True
    while stripped:
        stripped = False
        for marker in markers:
            if marker and response.endswith(marker):
                response = response[:-len(marker)]
                stripped = True
    return untemplate(prompt), response


def openrlhf_pairs(body: Any, limit: int, markers: tuple[str, ...] = END_MARKERS) -> tuple[list[str], list[str]]:
    """``{"query": [...], "prompts": [...]}`` -> (prompts, responses)."""
    if not isinstance(body, dict):
        raise BadRequest(f"body: expected a JSON object with query and prompts, got {type(body).__name__}")
    queries = _list(body, "query", limit)
    if "prompts" not in body:
        raise BadRequest("prompts: missing; the server needs each query's prompt to split off the response")
    given = _list(body, "prompts", limit)
    if len(given) != len(queries):
        raise BadRequest(f"prompts: {len(given)} items for {len(queries)} queries")
    prompts, responses = [], []
    for i, (query, prompt) in enumerate(zip(queries, given)):
        query, prompt = _text(query, f"query[{i}]"), _text(prompt, f"prompts[{i}]")
        try:
            p, r = split_query(query, prompt, markers)
        except ValueError:
            raise BadRequest(f"query[{i}] does not start with prompts[{i}] (the query must be the "
                             f"decoded prompt followed by the response)") from None
        prompts.append(p)
        responses.append(r)
    return prompts, responses
