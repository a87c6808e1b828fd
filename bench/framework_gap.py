"""How far each RLHF framework's reward is from `rmpipe score`, on SmolLM2-135M-Instruct.

    PYTHONPATH=$PWD python bench/framework_gap.py [--rows 120] [--pairs 60] [--out DIR]

Builds a small project (the built-in table, SmolLM2 embedded, a linear naive head), exports it,
feeds the exported folder each framework's input rebuilt from its source at a pinned release
(tests/rmpipe/frameworks.py says which file of OpenRLHF v0.11.0, VERL v0.7.0, TRL v1.9.0), and
prints one markdown row per path: median and max |Δlogit| against rmpipe's logits, rmpipe's logit
std on the same pairs, and the Spearman rank correlation. The last rows show what the export's
two fixes buy: the backbone's own template (ChatML's trailing newline) and the old pad token
(``<|im_end|>``, which the stock class takes for padding).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from tests.rmpipe import frameworks as fw  # noqa: E402
from tests.rmpipe.export_helpers import make_project, rmpipe_logits  # noqa: E402


def pairs_of(params, n: int) -> list[tuple[str, str]]:
    rows = pl.read_parquet(params.table_path).select("prompt", "response").unique(maintain_order=True)
    return list(zip(rows["prompt"], rows["response"]))[:n]


def remote(params, head, actor, pairs) -> np.ndarray:
    """OpenRLHF's requests to `rmpipe serve`'s /get_reward; the reward back to a logit."""
    import httpx

    from rmpipe.serve import RewardModel, ServeSettings, ServerThread, build_app

    got = []
    with ServerThread(build_app(RewardModel(params, head), ServeSettings())) as url, \
            httpx.Client(base_url=url, timeout=600) as client:
        for body in fw.openrlhf_requests(actor, pairs):
            reply = client.post("/get_reward", json=body)
            reply.raise_for_status()
            p = float(np.ravel(reply.json()["rewards"])[0])
            got.append(np.log(p / (1 - p)))
    return np.array(got)


def variant(folder: Path, into: Path, *, template: str | None = None, pad_eot: bool = False) -> Path:
    """A copy of the export with the backbone's own template or the old pad (<|im_end|>)."""
    import json

    from transformers import AutoTokenizer

    shutil.copytree(folder, into)
    tok = AutoTokenizer.from_pretrained(into)
    if template is not None:
        tok.chat_template = template
    if pad_eot:
        tok.pad_token = "<|im_end|>"
        config = json.loads((into / "config.json").read_text())
        config["pad_token_id"] = tok.pad_token_id
        (into / "config.json").write_text(json.dumps(config))
    tok.save_pretrained(into)
    return into


def measure(params, head, folder: Path, actor, pairs, want, scratch: Path, with_remote: bool = True):
    """``[(framework, path, dtype, gap)]`` for every path."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    bf16, f32 = torch.bfloat16, torch.float32
    rm_tok = AutoTokenizer.from_pretrained(folder)
    rows = []

    ids, mask = fw.openrlhf_batch(actor, pairs)
    for dtype in (f32, bf16):
        got = fw.openrlhf_rewards(fw.openrlhf_model(folder, dtype), ids, mask)
        rows.append(("OpenRLHF", "experience maker, `--reward.model_name_or_path`", dtype, got))
    if with_remote:
        rows.append(("OpenRLHF", "`--reward.remote_url` → `rmpipe serve`", f32, remote(params, head, actor, pairs)))

    rollout = fw.verl_rollout(actor, pairs, prompt_length=max(len(fw.prompt_ids(actor, p)) for p, _ in pairs),
                              response_length=max(len(fw.sampled(actor, r)) for _, r in pairs))
    switched = fw.verl_switch_template(actor, rm_tok, pairs, rollout)
    for dtype in (f32, bf16):
        model = fw.verl_token_model(folder, dtype)
        for name, batch in (("RewardModelWorker (token cls.)", rollout),
                            ("RewardModelWorker + `input_tokenizer`", switched)):
            rows.append(("VERL", name, dtype, fw.verl_worker_scores(model, batch, bf16=dtype == bf16)))
    texts = fw.verl_reward_loop_texts(actor, rm_tok, pairs)
    for dtype in (f32, bf16):
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype).eval()
        rows.append(("VERL", "reward loop, vLLM `/classify` (seq. cls.)", dtype,
                     fw.classify_one_by_one(model, rm_tok, texts)))

    for dtype in (f32, bf16):
        model, tok = fw.trl_model_and_tokenizer(folder, dtype)
        rows.append(("TRL", "GRPOTrainer, conversational", dtype,
                     fw.trl_rewards(model, tok, fw.trl_texts(actor, tok, pairs, True))))
    single = [k for k, (p, _) in enumerate(pairs) if len(fw.turns(p)) == 1]
    plain = [(fw.turns(pairs[k][0])[0]["content"], pairs[k][1]) for k in single]
    model, tok = fw.trl_model_and_tokenizer(folder)
    rows.append(("TRL", "GRPOTrainer, plain text", f32, (fw.trl_rewards(model, tok, fw.trl_texts(actor, tok, plain, False)), single)))

    own = variant(folder, scratch / "own-template", template=actor.chat_template)
    model, tok = fw.trl_model_and_tokenizer(own)
    rows.append(("(without the fix)", "TRL conversational, backbone's own template", f32,
                 fw.trl_rewards(model, tok, fw.trl_texts(actor, tok, pairs, True))))
    old_pad = variant(folder, scratch / "old-pad", pad_eot=True)
    model, tok = fw.trl_model_and_tokenizer(old_pad)
    rows.append(("(without the fix)", "TRL conversational, pad = `<|im_end|>`", f32,
                 fw.trl_rewards(model, tok, fw.trl_texts(actor, tok, pairs, True))))

    out = []
    for framework, path, dtype, got in rows:
        keep = slice(None)
        if isinstance(got, tuple):
            got, keep = got
        out.append((framework, path, str(dtype).replace("torch.", ""), fw.gap(got, want[keep])))
    return out


def policy_path(params, backbone: str = "smollm2-135m") -> str:
    from stages.embed import backbones

    return backbones.resolve(params.backbone(backbone), params.embed.models_dir, backbone).path


def table(rows) -> str:
    lines = ["| framework | path | dtype | median \\|Δlogit\\| | max \\|Δlogit\\| | logit std | Spearman |",
             "|---|---|---|---|---|---|---|"]
    for framework, path, dtype, g in rows:
        path = path.replace("|", "\\|")
        lines.append(f"| {framework} | {path} | {dtype} | {g['median']:.2g} | {g['max']:.2g} | "
                     f"{g['std']:.3f} | {g['spearman']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120, help="built-in table rows to embed and fit on")
    parser.add_argument("--pairs", type=int, default=60, help="pairs to compare on")
    parser.add_argument("--out", type=Path, default=None, help="keep the project here (default: a temp dir)")
    args = parser.parse_args()
    torch.manual_seed(0)
    root = args.out or Path(tempfile.mkdtemp(prefix="framework-gap-"))
    params, head = make_project(root, "smollm2-135m", None, hidden=(), rows=args.rows)
    from rmpipe.export import export

    export(params, head, root / "rm")
    pairs = pairs_of(params, args.pairs)
    want = rmpipe_logits(params, head, pairs, root)
    actor = AutoTokenizer.from_pretrained(policy_path(params))  # the policy: SmolLM2 itself
    rows = measure(params, head, root / "rm", actor, pairs, want, root)
    print(f"SmolLM2-135M-Instruct, linear naive head on {args.rows} built-in rows, {len(pairs)} pairs")
    print(table(rows))


if __name__ == "__main__":
    main()
