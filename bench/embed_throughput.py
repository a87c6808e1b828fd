"""Stage one's CPU throughput on the real length mix of ../shared/data (not a test).

Prints, in one process, tokens/s (real, unpadded tokens per second) on MiniLM of
  - rmpipe's hf backend (pair encoding, length-sorted batches to its CPU token budget),
  - the same at the GPU budget (16,384 padded tokens a batch),
  - a reference-style loop (every input padded to 512, fixed batches of 8, no sorting),
  - sentence-transformers ``encode`` (its own length sorting; prompt and response joined),
with ratios to the reference loop, and rmpipe's hf backend on SmolLM2-135M (chat template) at
the CPU and GPU budgets, with the ratio to the GPU budget. Each model also runs in bfloat16
(weights and compute; ``dtype: auto`` on a CPU with native bfloat16) at the CPU budget, timed
right after its float32 twin, and the cosine between the two embeddings of each pair is printed.

    [RMPIPE_SHARED_DATA=...] .venv/bin/python bench/embed_throughput.py [--pairs 96] [--smol-pairs 12] [--seed 0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def real_pairs(seed: int, n: int) -> list[tuple[str, str]]:
    """A random sample of (prompt, response) from all three shared sets, in their proportions."""
    from stages.prepare.shared import shared_root

    SHARED = shared_root()  # $RMPIPE_SHARED_DATA or ../shared/data
    pairs = []
    with gzip.open(SHARED / "hh-rlhf/harmless-base/test.jsonl.gz", "rt") as f:
        for line in f:
            for text in json.loads(line).values():
                head, _, tail = text.rpartition("\n\nAssistant:")
                pairs.append((head.strip(), tail.strip()))
    for row in json.loads((SHARED / "pandalm-testset/testset-v1.json").read_text()):
        prompt = (row["instruction"] + "\n\n" + row["input"]).strip()
        pairs += [(prompt, row["response1"]), (prompt, row["response2"])]
    for path in (SHARED / "llmbar").rglob("dataset.json"):
        for row in json.loads(path.read_text()):
            pairs += [(row["input"], row["output_1"]), (row["input"], row["output_2"])]
    pairs = [(p, r) for p, r in pairs if p and r]
    return random.Random(seed).sample(pairs, n)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def reference_loop(backend, ids, type_ids, width=512, batch=8):
    """As a typical reference script does it: pad everything to ``width``, batches of 8."""
    import torch

    from stages.embed.pooling import pool

    outs = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch):
            rows = ids[start:start + batch]
            x = torch.full((len(rows), width), backend.pad_id)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            types = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):
                x[j, :len(r)] = torch.as_tensor(r)
                mask[j, :len(r)] = 1
                types[j, :len(r)] = torch.as_tensor(type_ids[start + j])
            hidden = backend.model(input_ids=x, attention_mask=mask, token_type_ids=types).last_hidden_state
            outs.append(pool(hidden, mask, "mean"))
    return torch.cat(outs).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=96, help="MiniLM sample size")
    ap.add_argument("--smol-pairs", type=int, default=12, help="SmolLM2 sample size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved float32/bfloat16 rounds")
    args = ap.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from pipeline.config import load_params
    from stages.embed.backbones import resolve
    from stages.embed.hf_backend import HFBackend, default_batch_tokens
    from stages.embed.text import PairEncoder

    params = load_params(ROOT / "params.yaml")
    pairs = real_pairs(args.seed, args.pairs)
    prompts, responses = (list(x) for x in zip(*pairs))
    rows = []

    spec = params.backbone("minilm")
    path = resolve(spec, params.embed.models_dir).path
    backend = HFBackend(path, pooling="mean", device="cpu", batch_tokens=spec.batch_tokens)
    enc = PairEncoder(backend.tokenizer, spec.max_tokens, chat_template=False).encode(prompts, responses)
    backend.encode(enc.ids[:4], enc.type_ids[:4])  # warm-up
    cpu_budget, gpu_budget = backend.batch_tokens, default_batch_tokens("cuda")
    ours, t = timed(lambda: backend.encode(enc.ids, enc.type_ids))
    rows.append(("minilm", f"rmpipe hf backend (sorted, budget {cpu_budget}: CPU default)", t))
    bf = HFBackend(path, pooling="mean", device="cpu", batch_tokens=spec.batch_tokens, dtype="bfloat16")
    bf.encode(enc.ids[:4], enc.type_ids[:4])  # warm-up
    ours_bf, t = timed(lambda: bf.encode(enc.ids, enc.type_ids))
    rows.append(("minilm", f"rmpipe hf backend, bfloat16 (sorted, budget {cpu_budget})", t))
    cosines = {"minilm": cosine(ours, ours_bf)}
    backend.batch_tokens = gpu_budget
    _, t = timed(lambda: backend.encode(enc.ids, enc.type_ids))
    rows.append(("minilm", f"rmpipe hf backend (sorted, budget {gpu_budget}: GPU default)", t))
    ref, t = timed(lambda: reference_loop(backend, enc.ids, enc.type_ids))
    rows.append(("minilm", "reference loop (pad 512, batch 8)", t))
    assert np.abs(ref - ours).max() < 1e-3, "reference loop and hf backend disagree"
    st = SentenceTransformer(path, device="cpu")
    joined = [p + "\n\n" + r for p, r in pairs]
    st_tokens = sum(min(len(i), st.max_seq_length) for i in st.tokenizer(joined)["input_ids"])
    _, t = timed(lambda: st.encode(joined, batch_size=32))
    rows.append(("minilm", "sentence-transformers encode (batch 32)", t))

    smol = params.backbone("smollm2-135m")
    spath = resolve(smol, params.embed.models_dir).path  # dequantises once into cache/models
    sback = HFBackend(spath, pooling="last", device="cpu", batch_tokens=smol.batch_tokens)
    senc = PairEncoder(sback.tokenizer, min(smol.max_tokens, 512), chat_template=True).encode(
        prompts[:args.smol_pairs], responses[:args.smol_pairs])
    s32, t = timed(lambda: sback.encode(senc.ids))
    rows.append(("smollm2-135m", f"rmpipe hf backend (sorted, budget {sback.batch_tokens}: CPU default)", t))
    sbf = HFBackend(spath, pooling="last", device="cpu", batch_tokens=smol.batch_tokens, dtype="bfloat16")
    sbf.encode(senc.ids[:2])  # warm-up
    s16, t = timed(lambda: sbf.encode(senc.ids))
    rows.append(("smollm2-135m", f"rmpipe hf backend, bfloat16 (sorted, budget {sback.batch_tokens})", t))
    cosines["smollm2-135m"] = cosine(s32, s16)
    sback.batch_tokens = gpu_budget
    _, t = timed(lambda: sback.encode(senc.ids))
    rows.append(("smollm2-135m", f"rmpipe hf backend (sorted, budget {gpu_budget}: GPU default)", t))

    tokens = [enc.tokens] * 4 + [st_tokens] + [senc.tokens] * 3
    base = {"minilm": enc.tokens / rows[3][2], "smollm2-135m": senc.tokens / rows[7][2]}
    print(f"\nstage-one throughput, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.pairs} real pairs (mean {enc.tokens / args.pairs:.0f} tokens after truncation to "
          f"{spec.max_tokens}); SmolLM2 on the first {args.smol_pairs} (max 512 tokens)\n")
    print("| backbone | method | tokens | seconds | tokens/s | vs baseline |")
    print("|---|---|---:|---:|---:|---:|")
    for (model, method, secs), n in zip(rows, tokens):
        print(f"| {model} | {method} | {n} | {secs:.2f} | {n / secs:,.0f} | {(n / secs) / base[model]:.2f}x |")
    print("\nbaseline: the reference loop for MiniLM, the GPU budget for SmolLM2-135M")
    for model, c in cosines.items():
        print(f"{model}: cosine(float32, bfloat16) per pair: mean {c.mean():.6f}, min {c.min():.6f}")

    # float32 against bfloat16 again, alternating, so that a shared machine's load hits both alike
    print(f"\nfloat32 vs bfloat16, {args.rounds} interleaved rounds (f32, bf16, f32, bf16, ...), CPU budget\n")
    print("| backbone | tokens | float32 tokens/s per round | bfloat16 tokens/s per round | bf16 / f32 per round | bf16 / f32 (all rounds) |")
    print("|---|---:|---|---|---|---:|")
    backend.batch_tokens = sback.batch_tokens = cpu_budget
    for model, pair, tok, (b32, b16) in (("minilm", (enc.ids, enc.type_ids), enc.tokens, (backend, bf)),
                                          ("smollm2-135m", (senc.ids, None), senc.tokens, (sback, sbf))):
        times = [[timed(lambda b=b: b.encode(*pair))[1] for b in (b32, b16)] for _ in range(args.rounds)]
        f32s, bf16s = ([tok / t[k] for t in times] for k in (0, 1))
        print(f"| {model} | {tok} | {', '.join(f'{x:,.0f}' for x in f32s)} | {', '.join(f'{x:,.0f}' for x in bf16s)} | "
              f"{', '.join(f'{b / a:.2f}x' for a, b in zip(f32s, bf16s))} | "
              f"{sum(t[0] for t in times) / sum(t[1] for t in times):.2f}x |")


def cosine(a, b):
    import numpy as np

    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


if __name__ == "__main__":
    main()
