"""The exported folder fed exactly as OpenRLHF v0.11.0, VERL v0.7.0 and TRL v1.9.0 feed a reward
model (rebuilt from their source: tests/rmpipe/frameworks.py names each file), compared with
`rmpipe score` on the same pairs. Paths that read rmpipe's input agree to 1e-4 in float32; the
ones that cannot (bf16, TRL's plain-text prompts) are measured. The tiny model is a random
2-layer Llama with SmolLM2's ChatML template; the SmolLM2 table is in docs/rlhf.md
(bench/framework_gap.py)."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rmpipe.export import export
from tests.rmpipe import frameworks as fw
from tests.rmpipe.export_helpers import PAIRS, make_project, rmpipe_logits
from tests.rmpipe.test_export import tiny_spec

pytestmark = pytest.mark.slow  # a tiny Llama head fitted and exported, transformers reloads

TOL = 1e-4
# rmpipe's pairs plus a system turn, a response that starts with a space and one with a newline
MORE = PAIRS + [([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}], " Yo."),
                ("List two fruits.", "- apple\n- pear")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_chatml_dir):
    """``(actor tokenizer, exported folder, rmpipe's logits on MORE, params, head)``."""
    tmp = tmp_path_factory.mktemp("frameworks")
    model = shutil.copytree(tiny_chatml_dir, tmp / "model")
    params, head = make_project(tmp, "tiny", tiny_spec(model), hidden=())
    export(params, head, tmp / "rm")
    want = rmpipe_logits(params, head, MORE, tmp)
    assert np.std(want) > 1e-3  # the pairs get different rewards: agreement means something
    return AutoTokenizer.from_pretrained(model), tmp / "rm", want, params, head


def test_openrlhf_experience_maker_reads_rmpipes_reward(exported):
    actor, folder, want, *_ = exported
    model = fw.openrlhf_model(folder)
    ids, mask = fw.openrlhf_batch(actor, MORE)
    assert (mask == 0).any() and all(row[m.sum() - 1] == actor.eos_token_id for row, m in zip(ids, mask))
    got = fw.openrlhf_rewards(model, ids, mask)
    assert np.abs(got - want).max() <= TOL, fw.gap(got, want)
    mean, std = model.config.mean, model.config.std
    normalised = fw.openrlhf_rewards(model, ids, mask, normalize=True)
    assert np.abs(normalised - (want - mean) / std).max() <= TOL / std


def test_openrlhf_bf16_is_measured(exported):
    actor, folder, want, *_ = exported
    got = fw.openrlhf_rewards(fw.openrlhf_model(folder, torch.bfloat16), *fw.openrlhf_batch(actor, MORE))
    g = fw.gap(got, want)
    print(f"\nOpenRLHF bf16 vs rmpipe (tiny): {g}")
    assert 0 < g["max"] < g["std"] and g["spearman"] > 0.8


def test_openrlhf_remote_request_gets_rmpipes_reward(exported):
    """The request OpenRLHF builds, one sample a request, answered by `rmpipe serve`."""
    from rmpipe.serve import RewardModel, ServeSettings, ServerThread, build_app

    actor, _, want, params, head = exported
    server = RewardModel(params, head)
    got = []
    with ServerThread(build_app(server, ServeSettings())) as url, httpx.Client(base_url=url, timeout=60) as client:
        for body in fw.openrlhf_requests(actor, MORE):
            reply = client.post("/get_reward", json=body)
            assert reply.status_code == 200, reply.text
            got.append(float(np.ravel(reply.json()["rewards"])[0]))
    assert np.abs(np.array(got) - 1 / (1 + np.exp(-want))).max() <= TOL


@pytest.mark.parametrize("kind", ["token", "sequence"])
@pytest.mark.parametrize("input_tokenizer", [False, True])
def test_verl_reward_model_worker_float32_reads_rmpipes_reward(exported, kind, input_tokenizer):
    """Token classification is the worker's own class; sequence classification is the stock
    class (which VERL's reward loop serves through vLLM, below) fed the worker's batch, positions
    included: without them the stock class counts left padding as positions."""
    actor, folder, want, *_ = exported
    rm_tok = AutoTokenizer.from_pretrained(folder)
    rollout = fw.verl_rollout(actor, MORE)
    batch = fw.verl_switch_template(actor, rm_tok, MORE, rollout) if input_tokenizer else rollout
    if kind == "token":
        got = fw.verl_worker_scores(fw.verl_token_model(folder), batch, bf16=False)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        with torch.no_grad():  # the stock class finds the last token that is not its pad
            got = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"]).logits[:, 0].numpy()
    assert np.abs(got - want).max() <= TOL, fw.gap(got, want)


@pytest.mark.parametrize("input_tokenizer", [False, True])
def test_verl_reward_model_worker_bf16_is_measured(exported, input_tokenizer):
    actor, folder, want, *_ = exported
    rollout = fw.verl_rollout(actor, MORE)
    rm_tok = AutoTokenizer.from_pretrained(folder)
    batch = fw.verl_switch_template(actor, rm_tok, MORE, rollout) if input_tokenizer else rollout
    got = fw.verl_worker_scores(fw.verl_token_model(folder, torch.bfloat16), batch, bf16=True)
    g = fw.gap(got, want)
    print(f"\nVERL worker bf16 (input_tokenizer={input_tokenizer}) vs rmpipe (tiny): {g}")
    assert 0 < g["max"] < g["std"] and g["spearman"] > 0.8


def test_verl_reward_loop_classify_reads_rmpipes_reward(exported):
    actor, folder, want, *_ = exported
    rm_tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    got = fw.classify_one_by_one(model, rm_tok, fw.verl_reward_loop_texts(actor, rm_tok, MORE))
    assert np.abs(got - want).max() <= TOL, fw.gap(got, want)


def test_trl_grpo_conversational_reads_rmpipes_reward(exported):
    actor, folder, want, *_ = exported
    model, rm_tok = fw.trl_model_and_tokenizer(folder)
    texts = fw.trl_texts(actor, rm_tok, MORE, conversational=True)
    assert all(t.endswith("<|im_end|>") for t in texts)  # the exported template stops there
    got = fw.trl_rewards(model, rm_tok, texts)
    assert np.abs(got - want).max() <= TOL, fw.gap(got, want)


def test_trl_grpo_plain_text_cannot_match_and_is_measured(exported):
    """Plain prompts reach the policy untemplated, and the reward model sees prompt + completion
    as bare text: no template, no end-of-turn token. Not rmpipe's input, so not its reward."""
    actor, folder, want, *_ = exported
    model, rm_tok = fw.trl_model_and_tokenizer(folder)
    plain = [(p, r) for p, r in MORE if isinstance(p, str)]
    keep = [i for i, (p, _) in enumerate(MORE) if isinstance(p, str)]
    got = fw.trl_rewards(model, rm_tok, fw.trl_texts(actor, rm_tok, plain, conversational=False))
    g = fw.gap(got, want[keep])
    print(f"\nTRL plain text vs rmpipe (tiny): {g}")
    assert g["max"] > 1e-2


def test_without_the_wrapped_template_re_rendering_paths_read_after_end_of_turn(exported, tmp_path):
    """What the export's template wrapping buys: the backbone's own template leaves ChatML's
    trailing newline, so TRL's conversational path reads the token after <|im_end|>."""
    actor, folder, want, *_ = exported
    plain = tmp_path / "rm"
    shutil.copytree(folder, plain)
    tok = AutoTokenizer.from_pretrained(plain)
    tok.chat_template = actor.chat_template
    tok.save_pretrained(plain)
    model, rm_tok = fw.trl_model_and_tokenizer(plain)
    texts = fw.trl_texts(actor, rm_tok, MORE, conversational=True)
    assert all(t.endswith("<|im_end|>\n") for t in texts)
    g = fw.gap(fw.trl_rewards(model, rm_tok, texts), want)
    print(f"\nTRL conversational with the backbone's own template (tiny): {g}")
    assert g["max"] > 1e-2



def test_smollm2_every_framework_path_measured(tmp_path):
    """SmolLM2-135M-Instruct (the docs/rlhf.md table, bench/framework_gap.py): the float32 paths
    that read rmpipe's input agree to 1e-4; bf16 keeps the ranking; plain-text TRL does not."""
    from bench.framework_gap import measure, pairs_of, policy_path, table

    params, head = make_project(tmp_path, "smollm2-135m", None, hidden=(), rows=120)
    export(params, head, tmp_path / "rm")
    pairs = pairs_of(params, 12)
    want = rmpipe_logits(params, head, pairs, tmp_path)
    actor = AutoTokenizer.from_pretrained(policy_path(params))
    rows = measure(params, head, tmp_path / "rm", actor, pairs, want, tmp_path, with_remote=False)
    print("\n" + table(rows))
    for framework, path, dtype, g in rows:
        if framework.startswith("(") or "plain" in path:
            assert g["max"] > 1e-2, (path, g)  # the fixes matter; bare text is not rmpipe's input
        elif dtype == "float32":
            assert g["max"] <= TOL, (framework, path, g)
        else:
            assert g["spearman"] > 0.8 and g["median"] < g["std"], (framework, path, g)
