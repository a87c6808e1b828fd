"""float32 against bfloat16 MiniLM at 1 and 2 torch threads, rounds interleaved: how much of
bfloat16's gain a busy machine's thread contention hides (same backend, same 48 real pairs).

    [RMPIPE_SHARED_DATA=...] .venv/bin/python bench/bf16_threads.py [--pairs 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.embed_throughput import real_pairs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    from pipeline.config import load_params
    from stages.embed.backbones import resolve
    from stages.embed.hf_backend import HFBackend
    from stages.embed.text import PairEncoder

    params = load_params(ROOT / "params.yaml")
    spec = params.backbone("minilm")
    path = resolve(spec, params.embed.models_dir).path
    prompts, responses = (list(x) for x in zip(*real_pairs(0, args.pairs)))
    backends = {d: HFBackend(path, pooling="mean", device="cpu", dtype=d, batch_tokens=2048)
                for d in ("float32", "bfloat16")}
    enc = PairEncoder(backends["float32"].tokenizer, spec.max_tokens, False).encode(prompts, responses)
    for b in backends.values():
        b.encode(enc.ids[:4], enc.type_ids[:4])  # warm-up
    print(f"MiniLM, {args.pairs} real pairs ({enc.tokens} tokens), {args.rounds} interleaved rounds\n")
    print("| torch threads | float32 tokens/s | bfloat16 tokens/s | bf16 / f32 |")
    print("|---:|---:|---:|---:|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        spent = dict.fromkeys(backends, 0.0)
        for _ in range(args.rounds):
            for d, b in backends.items():
                t0 = time.perf_counter()
                b.encode(enc.ids, enc.type_ids)
                spent[d] += time.perf_counter() - t0
        rate = {d: args.rounds * enc.tokens / s for d, s in spent.items()}
        print(f"| {threads} | {rate['float32']:,.0f} | {rate['bfloat16']:,.0f} | "
              f"{spent['float32'] / spent['bfloat16']:.2f}x |")


if __name__ == "__main__":
    main()
