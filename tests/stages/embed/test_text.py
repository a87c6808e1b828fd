"""Chat template and pair encoding; front-of-prompt truncation first, response tail last."""

import pytest
from transformers import AutoTokenizer

from pipeline.errors import RmpipeError
from pipeline.table import canonical_prompt
from stages.embed.text import PairEncoder

pytestmark = pytest.mark.slow  # the real MiniLM tokenizer (and importing transformers)


@pytest.fixture(scope="module")
def chat_tok(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def pair_tok(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


def test_chat_template_over_user_and_assistant(chat_tok):
    enc = PairEncoder(chat_tok, 512, chat_template=True).encode(["hello there"], ["fine answer"])
    want = chat_tok.apply_chat_template(
        [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "fine answer"}],
        tokenize=False)
    assert enc.ids[0] == chat_tok(want, add_special_tokens=False)["input_ids"]
    assert (enc.prompt_cut, enc.response_cut) == (0, 0)


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
    if chat:  # the template's own tokens survive the cut
        assert "< assistant >" in text or "<assistant>" in text


def test_template_required_when_asked(pair_tok):
    with pytest.raises(RmpipeError, match="chat_template"):
        PairEncoder(pair_tok, 64, chat_template=True)
