"""Chat template and pair encoding; front-of-prompt truncation first, response tail last.

A chat pair is the policy's sequence: the template with the generation prompt, the response,
the end-of-turn token, checked token for token against the tokenizer's own
``apply_chat_template(..., add_generation_prompt=True)`` on a ChatML tokenizer (SmolLM2's
template) and on the toy template."""

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from pipeline.errors import RmpipeError
from pipeline.table import canonical_prompt, prompt_turns
from stages.embed.hf_backend import HFBackend
from stages.embed.text import PairEncoder, end_of_turn

pytestmark = pytest.mark.slow  # the real MiniLM tokenizer (and importing transformers)


@pytest.fixture(scope="module")
def chat_tok(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def pair_tok(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def chatml_tok(tiny_chatml_dir):
    return AutoTokenizer.from_pretrained(tiny_chatml_dir)


def policy_ids(tok, turns, response, eot):
    """What a policy's sample is: the generation prompt's ids, the response's, end-of-turn."""
    prompt = tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=False)
    return list(prompt) + tok(response, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids(eot)]


MULTI = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"},
         {"role": "user", "content": "second"}]


@pytest.mark.parametrize("which, eot", [("chatml", "<|im_end|>"), ("toy", "[SEP]")])
def test_chat_pair_is_the_policys_sequence_ending_at_end_of_turn(which, eot, chatml_tok, chat_tok):
    tok = chatml_tok if which == "chatml" else chat_tok
    assert end_of_turn(tok) == eot
    encoder = PairEncoder(tok, 512, chat_template=True)
    prompts = ["hello there", canonical_prompt(MULTI)]
    responses = ["fine answer", " It is 4."]
    enc = encoder.encode(prompts, responses)
    for ids, turns, response in zip(enc.ids, ([{"role": "user", "content": "hello there"}], MULTI), responses):
        assert ids == policy_ids(tok, turns, response, eot)
        assert ids[-1] == tok.convert_tokens_to_ids(eot)  # nothing after the end-of-turn token
    if which == "toy":
        return  # BERT's decode is not lossless, and the toy template writes a space before [SEP]
    full = tok.apply_chat_template([*MULTI, {"role": "assistant", "content": " It is 4."}], tokenize=False)
    assert tok.decode(enc.ids[1]) == encoder.chat_text(MULTI, " It is 4.") == full[:full.rindex(eot) + len(eot)]
    assert (enc.prompt_cut, enc.response_cut) == (0, 0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_token_pooling_reads_the_end_of_turn_token_on_both_padding_sides(side, tiny_chatml_dir, chatml_tok):
    """Each pair's vector is the final hidden state at its own end-of-turn token, computed alone."""
    enc = PairEncoder(chatml_tok, 512, chat_template=True).encode(
        ["Hi", "What is 2 + 2?", canonical_prompt(MULTI)], ["Hello!", "4", "Le chat dort, " * 5])
    assert len({len(i) for i in enc.ids}) == 3  # different lengths: padding happens
    backend = HFBackend(str(tiny_chatml_dir), pooling="last", device="cpu", padding_side=side)
    got = backend.encode(enc.ids)
    model = AutoModel.from_pretrained(tiny_chatml_dir).eval()
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].numpy() for ids in enc.ids]
    assert np.abs(got - np.stack(alone)).max() < 1e-5


def test_multi_turn_prompt_keeps_its_turns(chat_tok):
    turns = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"},
             {"role": "user", "content": "second"}]
    enc = PairEncoder(chat_tok, 512, chat_template=True).encode([canonical_prompt(turns)], ["end"])
    text = chat_tok.decode(enc.ids[0])
    assert text.index("first") < text.index("reply") < text.index("second") < text.index("end")
    assert text.count("< assistant >") == 2 or text.count("<assistant>") == 2


def test_pair_encoding_is_the_tokenizers_own(pair_tok):
    enc = PairEncoder(pair_tok, 512, chat_template=False).encode(["a question"], ["an answer"])
    assert enc.ids[0] == pair_tok("a question", "an answer")["input_ids"]
    assert enc.type_ids[0] == pair_tok("a question", "an answer")["token_type_ids"]


@pytest.mark.parametrize("chat", [True, False])
def test_long_prompt_loses_its_front(chat, chat_tok, pair_tok):
    tok = chat_tok if chat else pair_tok
    prompt = "start " + " ".join(f"w{i}" for i in range(300)) + " finale"
    enc = PairEncoder(tok, 64, chat_template=chat).encode([prompt, "short"], ["the answer", "ok"])
    text = tok.decode(enc.ids[0])
    assert len(enc.ids[0]) <= 64 and len(enc.ids[0]) >= 60
    assert "finale" in text and "the answer" in text and "start" not in text
    assert (enc.prompt_cut, enc.response_cut) == (1, 0)


@pytest.mark.parametrize("chat", [True, False])
def test_long_response_loses_its_tail_only_after_the_prompt(chat, chat_tok, pair_tok):
    tok = chat_tok if chat else pair_tok
    response = "opening " + " ".join(f"r{i}" for i in range(300)) + " closing"
    enc = PairEncoder(tok, 48, chat_template=chat).encode(["the prompt"], [response])
    text = tok.decode(enc.ids[0])
    assert len(enc.ids[0]) <= 48
    assert "opening" in text and "closing" not in text and "prompt" not in text
    assert (enc.prompt_cut, enc.response_cut) == (1, 1)
    if chat:  # the template's own tokens survive the cut, the end-of-turn token last
        assert "< assistant >" in text or "<assistant>" in text
        assert enc.ids[0][-1] == tok.convert_tokens_to_ids("[SEP]")


def test_a_cut_chatml_pair_keeps_its_end_of_turn_token(chatml_tok):
    response = "opening " + "Hello there friend " * 60 + "closing"
    enc = PairEncoder(chatml_tok, 40, chat_template=True).encode(["the prompt " * 30], [response])
    text = chatml_tok.decode(enc.ids[0])
    assert len(enc.ids[0]) <= 40 and (enc.prompt_cut, enc.response_cut) == (1, 1)
    assert text.endswith("<|im_end|>") and "<|im_start|>assistant\nopening" in text


def test_template_required_when_asked(pair_tok):
    with pytest.raises(RmpipeError, match="chat_template"):
        PairEncoder(pair_tok, 64, chat_template=True)


def test_smollm2_pair_is_its_template_response_and_im_end_read_there_on_both_padding_sides():
    """The real backbone: SmolLM2-135M-Instruct's own tokenizer and template (its default system
    turn included), and its vectors read at <|im_end|> whichever side the batch is padded on."""
    from pathlib import Path

    from pipeline.config import load_params
    from stages.embed import backbones

    repo = Path(__file__).resolve().parents[3]
    spec = load_params(repo / "params.yaml").backbone("smollm2-135m")
    path = backbones.resolve(spec, repo / "cache" / "models", "smollm2-135m").path
    tok = AutoTokenizer.from_pretrained(path)
    prompts = ["What is 2 + 2?", canonical_prompt(MULTI), "Name a colour."]
    responses = ["4", " It is four.", "Blue, or perhaps a deep green."]
    enc = PairEncoder(tok, spec.max_tokens, chat_template=True).encode(prompts, responses)
    for ids, p, r in zip(enc.ids, prompts, responses):
        assert ids == policy_ids(tok, prompt_turns(p), r, "<|im_end|>")
    model = AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        alone = np.stack([model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].numpy() for ids in enc.ids])
    for side in ("right", "left"):
        got = HFBackend.from_model(model, tok, pooling="last", device="cpu", padding_side=side).encode(enc.ids)
        assert np.abs(got - alone).max() < 1e-4, side
