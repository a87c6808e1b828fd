"""What the reward server accepts: request bodies into the store's (prompt, response) pairs.

Three wire formats, checked here so that a bad body is one line and a 4xx, never a crash:

- native ``POST /rewards``: a JSON list of ``{"prompt": str | [{"role", "content"}...],
  "response": str}``;
- OpenRLHF's remote reward model (v0.11, ``openrlhf/utils/agent.py``,
  ``SingleTurnAgentExecutor._fetch_rewards_via_http``): ``{"query": [...], "prompts": [...],
  "labels": [...]}``, one sample a request; each query is the policy's decoded sequence (the
  prompt as the policy saw it, then the response, special tokens kept). With several
  ``--reward.remote_url`` OpenRLHF shards that one sample over the servers, so the others get
  empty lists: they are answered with empty lists. An over-long prompt is cut *from the left*
  before generation while ``prompts`` still holds the whole string, so the query may begin
  inside the prompt: the response is found after the longest tail of the prompt the query
  starts with, and the pair is the whole prompt with that response;
- vLLM's ``POST /classify`` (``{model, input: str | [str], use_activation}`` or ``messages``),
  which VERL's reward loop calls for a discriminative reward model with the conversation
  rendered by the reward model's chat template, assistant turn included.

One rule for the conversation on every route (:class:`Canon`): a templated text (ChatML or
Llama-3) is taken back to its turns; a leading system turn equal to a *default* system turn (the
one the backbone's template injects when there is none, or one of :data:`KNOWN_DEFAULT_SYSTEMS`,
or one given with ``--default-system``) is dropped, since the template puts it back and a policy's
template adds it unasked; a lone user turn is its plain text. So the same conversation is the
same pair, and a stored pair costs no forward pass, whichever route asks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.table import canonical_prompt


class BadRequest(Exception):
    """A request the server refuses: ``status`` (400, 413, 422) and a one-line reason."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


# End markers of common chat tokenizers; the backbone's own eos/pad tokens are added at start-up.
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<eos>",
               "<end_of_turn>", "<|end|>", "<pad>", "[PAD]", "<|pad|>")
# System turns that chat templates inject when a conversation has none (SmolLM2, Qwen2.5).
KNOWN_DEFAULT_SYSTEMS = ("You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                         "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")

_FORMS = (  # (one turn, the generation prompt, what may open the text)
    (re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n?", re.S), "<|im_start|>assistant\n", ""),
    (re.compile(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S),
     "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|begin_of_text|>"),
)


def template_turns(text: str) -> tuple[list[dict], bool] | None:
    """The chat turns of a ChatML or Llama-3 text and whether it ends with the generation
    prompt; None when the text is not wholly in one of these forms."""
    for pattern, opener, bos in _FORMS:
        body = text[len(bos):] if bos and text.startswith(bos) else text
        open_end = body.endswith(opener)
        body = body[:-len(opener)] if open_end else body
        turns, end = [], 0
        for match in pattern.finditer(body):
            if match.start() != end:
                break
            turns.append({"role": match.group(1), "content": match.group(2)})
            end = match.end()
        if turns and end == len(body):
            return turns, open_end
    return None


@dataclass(frozen=True)
class Canon:
    """How a request's conversation becomes the store's pair (the module docstring's rule)."""

    markers: tuple[str, ...] = END_MARKERS
    default_systems: tuple[str, ...] = KNOWN_DEFAULT_SYSTEMS
    max_pair_chars: int = 65_536

    def prompt(self, turns: list[dict]) -> str:
        if len(turns) > 1 and turns[0]["role"] == "system" and turns[0]["content"] in self.default_systems:
            turns = turns[1:]
        if len(turns) == 1 and turns[0]["role"] == "user":
            return turns[0]["content"]
        return canonical_prompt(turns)

    def text_prompt(self, prompt: str) -> str:
        """A prompt string: a templated one back to its turns, else as it is."""
        found = template_turns(prompt)
        return self.prompt(found[0]) if found else prompt

    def strip_end(self, response: str) -> str:
        """A response without the end-of-sequence / padding markers after it."""
        stripped = True
        while stripped:
            stripped = False
            for marker in self.markers:
                if marker and response.endswith(marker):
                    response = response[:-len(marker)]
                    stripped = True
        return response

    def check_size(self, chars: int, where: str) -> None:
        if chars > self.max_pair_chars:
            raise BadRequest(f"{where}: {chars} characters, over this server's limit of "
                             f"{self.max_pair_chars} a pair (--max-pair-chars)", status=413)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{where}: not valid Unicode (a lone surrogate)") from None
    return value


def chat_turns(value: Any, where: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{where}: expected a non-empty list of chat turns")
    for j, turn in enumerate(value):
        if not isinstance(turn, dict) or not {"role", "content"} <= turn.keys():
            raise BadRequest(f"{where}[{j}]: a chat turn needs 'role' and 'content'")
        _text(turn["role"], f"{where}[{j}].role")
        _text(turn["content"], f"{where}[{j}].content")
    return [{"role": t["role"], "content": t["content"]} for t in value]


def _list(body: dict, key: str, limit: int, empty_ok: bool = False) -> list:
    value = body.get(key)
    if not isinstance(value, list):
        raise BadRequest(f"{key}: expected a list, got {type(value).__name__ if key in body else 'nothing'}")
    if not value and not empty_ok:
        raise BadRequest(f"{key}: no items to score")
    if len(value) > limit:
        raise BadRequest(f"{key}: {len(value)} items, more than this server's limit of {limit} "
                         f"a request (--max-request-pairs)", status=413)
    return value


def native_pairs(body: Any, limit: int, canon: Canon = Canon()) -> tuple[list[str], list[str]]:
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
        where = f"pairs[{i}].prompt"
        prompt = item["prompt"]
        if isinstance(prompt, list):
            prompt = canon.prompt(chat_turns(prompt, where))
        else:
            prompt = canon.text_prompt(_text(prompt, where))
        response = _text(item["response"], f"pairs[{i}].response")
        canon.check_size(len(prompt) + len(response), f"pairs[{i}]")
        prompts.append(prompt)
        responses.append(response)
    return prompts, responses


def split_query(query: str, prompt: str, canon: Canon) -> tuple[str, str]:
    """(prompt, response) of one OpenRLHF query: the response follows the prompt, or the
    longest tail of it that the query starts with (a left-truncated prompt)."""
    query = query.lstrip("\ufffd")  # a cut through a multi-byte character decodes to U+FFFD
    if query.startswith(prompt):
        start = len(prompt)
    else:
        head, start = query[:256], None
        k = prompt.find(head[:1]) if head else -1
        while k >= 0:  # the longest tail first: the truncation kept as much as it could
            if (prompt.startswith(head, k) or len(prompt) - k < len(head)) and query.startswith(prompt[k:]):
                start = len(prompt) - k
                break
            k = prompt.find(head[:1], k + 1)
        if start is None:
            raise ValueError
    return canon.text_prompt(prompt), canon.strip_end(query[start:])


def openrlhf_pairs(body: Any, limit: int, canon: Canon = Canon()) -> tuple[list[str], list[str]]:
    """``{"query": [...], "prompts": [...]}`` -> (prompts, responses); empty lists are fine."""
    if not isinstance(body, dict):
        raise BadRequest(f"body: expected a JSON object with query and prompts, got {type(body).__name__}")
    queries = _list(body, "query", limit, empty_ok=True)
    if "prompts" not in body:
        raise BadRequest("prompts: missing; the server needs each query's prompt to split off the response")
    given = _list(body, "prompts", limit, empty_ok=True)
    if len(given) != len(queries):
        raise BadRequest(f"prompts: {len(given)} items for {len(queries)} queries")
    prompts, responses = [], []
    for i, (query, prompt) in enumerate(zip(queries, given)):
        query, prompt = _text(query, f"query[{i}]"), _text(prompt, f"prompts[{i}]")
        canon.check_size(len(query) + len(prompt), f"query[{i}]")
        try:
            p, r = split_query(query, prompt, canon)
        except ValueError:
            raise BadRequest(f"query[{i}] does not start with prompts[{i}] nor with a tail of it "
                             f"(the query must be the decoded prompt followed by the response)") from None
        prompts.append(p)
        responses.append(r)
    return prompts, responses


def conversation_pair(turns: list[dict], canon: Canon, where: str) -> tuple[str, str]:
    """A whole conversation (its last turn the assistant's) -> (prompt, response)."""
    if len(turns) < 2 or turns[-1]["role"] != "assistant":
        raise BadRequest(f"{where}: the conversation must end with an assistant turn after a prompt "
                         f"(the response to score)")
    canon.check_size(sum(len(t["content"]) for t in turns), where)
    return canon.prompt(turns[:-1]), canon.strip_end(turns[-1]["content"])


def classify_pairs(body: Any, limit: int, canon: Canon = Canon()) -> tuple[list[str], list[str], bool]:
    """vLLM's classify request -> (prompts, responses, use_activation). ``input`` is one or more
    conversations as the reward model's chat template renders them (VERL's
    ``_preprocess_reward_inputs``); ``messages`` is one conversation as turns. vLLM's
    ``use_activation`` (default true: the sigmoid) and VERL's older ``activation`` both work."""
    if not isinstance(body, dict):
        raise BadRequest(f"body: expected a JSON object with input or messages, got {type(body).__name__}")
    flag = body.get("use_activation", body.get("activation"))
    if flag is not None and not isinstance(flag, bool):
        raise BadRequest(f"use_activation: expected true, false or null, got {type(flag).__name__}")
    if "messages" in body:
        p, r = conversation_pair(chat_turns(body["messages"], "messages"), canon, "messages")
        return [p], [r], flag is not False
    if "input" not in body:
        raise BadRequest("input: missing (a templated conversation, or a list of them)")
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    texts = _list({"input": texts}, "input", limit)
    prompts, responses = [], []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(f"input[{i}]: expected text (token ids are not accepted: rmpipe needs the "
                             f"prompt and the response apart), got {type(text).__name__}")
        canon.check_size(len(text), f"input[{i}]")
        found = template_turns(_text(text, f"input[{i}]"))
        if found is None or found[1]:
            raise BadRequest(f"input[{i}]: not a whole chat-templated conversation (ChatML or Llama-3) "
                             f"ending with the assistant's turn; send it as rendered by the chat "
                             f"template, or as messages")
        p, r = conversation_pair(found[0], canon, f"input[{i}]")
        prompts.append(p)
        responses.append(r)
    return prompts, responses, flag is not False
