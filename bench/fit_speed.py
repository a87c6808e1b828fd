"""Time per epoch and peak memory of every method's fit, one subprocess per method.

    .venv/bin/python bench/fit_speed.py                # N=35,000, D=4,096, 5 epochs
    .venv/bin/python bench/fit_speed.py --n 5000 --d 256 --epochs 2

Random embeddings (float32, held once: N·D·4 bytes), 20% observed, known noise rates (so no
anchor step); the nuisance models are the params defaults (logistic, 5 folds) unless flags say
otherwise. Time per epoch is the median over epochs (train steps + validation pass); peak
memory is the child's max RSS. Prints one row per method and ratios to ``naive``. Not a test.

A store larger than memory (docs/scale.md), fitted with causalrm as ``fit`` streams it:

    .venv/bin/python bench/fit_speed.py --store /big/disk/stream-10m --n 10000000 --d 1024 --epochs 2

writes (once; a rerun reuses it and completes a partial one) a real store of N synthetic vectors
from a known-truth world — x ~ N(0, I), reward logit 2·s(x) with s the scaled sum of the first 8
coordinates, feedback given with probability σ(s − 1.6) and flipped at (ρ+, ρ−) = (0.1, 0.2);
80% train, 19% val, 1% test — in shards of ``--shard-rows``, then fits one causalrm head from it
in a child process and prints seconds for each step, reads from the store, peak RSS and the
head's test AUROC against the clean labels (evaluation only). ``--validate-ab`` fits the head
twice after one nuisance fit: validating after each epoch's pass (the baseline), then during the
next pass (what ``fit`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(args) -> None:
    import numpy as np
    import torch

    from pipeline.config import FitParams, HeadParams, NoiseParams, PropensityParams
    from stages.fit.core import FitInputs, fit_method, fit_nuisance
    from stages.fit.methods import get_method

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.d), dtype=np.float32)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    score = X[:, :8].sum(axis=1) / np.sqrt(8)
    observed = rng.random(args.n) < 1 / (1 + np.exp(-(score - 1.6)))
    feedback = (rng.random(args.n) < 1 / (1 + np.exp(-2 * score))).astype(np.int8)
    split = np.where(rng.random(args.n) < 0.8, "train", "val")
    data = FitInputs(X, split, observed, np.where(observed, feedback, 0))
    params = FitParams(
        head=HeadParams(max_epochs=args.epochs, patience=args.epochs + 1, threads=args.threads),
        noise=NoiseParams(rho_pos=0.1, rho_neg=0.2),
        propensity=PropensityParams(model=args.propensity, pca_dim=args.pca_dim, folds=args.folds))
    method = get_method(args.child)
    t0 = time.perf_counter()
    nuisance = fit_nuisance(data, params, [method])
    t1 = time.perf_counter()
    _, result = fit_method(data, nuisance, method, params)
    trained = int(((split == "train") & observed).sum()) if not method.needs_imputation else int((split == "train").sum())
    print(json.dumps({
        "method": args.child, "nuisance_s": t1 - t0,
        "s_per_epoch": float(np.median([c["seconds"] for c in result.curve])),
        "epochs": result.epochs_run, "rows_per_epoch": trained,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "embeddings_mb": X.nbytes / 2**20, "after_embeddings_mb": base_rss,
        "threads": torch.get_num_threads()}))


# --- a store larger than memory ---------------------------------------------------------------
def world_shard(k: int, rows: int, d: int):
    """Shard ``k`` of the known-truth world: ids, vectors and the row facts (seeded by ``k``)."""
    import numpy as np

    rng = np.random.default_rng(1000 + k)  # the 8 coordinates the truth reads, and the row facts
    head = rng.standard_normal((rows, 8), dtype=np.float32)
    s = head.sum(axis=1, dtype=np.float64) / np.sqrt(8)
    label = rng.random(rows) < 1 / (1 + np.exp(-2 * s))
    observed = rng.random(rows) < 1 / (1 + np.exp(-(s - 1.6)))
    flip = rng.random(rows) < np.where(label, 0.1, 0.2)
    u = rng.random(rows)
    split = np.where(u < 0.8, "train", np.where(u < 0.99, "val", "test"))
    facts = {"label": label, "observed": observed, "feedback": (label ^ flip).astype(np.int8), "split": split}
    if d == 0:  # the facts alone
        return None, None, facts
    X = np.empty((rows, d), dtype=np.float32)
    X[:, :8] = head
    X[:, 8:] = np.random.default_rng(2000 + k).standard_normal((rows, d - 8), dtype=np.float32)
    return [f"w{k:05d}-{i:06d}" for i in range(rows)], X, facts


def build_store(root: Path, n: int, d: int, shard_rows: int) -> None:
    """The world's store at ``root`` (resumable: shards already listed are kept) and its row facts."""
    import numpy as np

    from pipeline.store import EmbeddingStore

    store = EmbeddingStore.create(root, backbone="world", spec={"model": "bench/fit_speed world", "dim": d}, dim=d)

    done = store.pair_ids()
    shards = (n + shard_rows - 1) // shard_rows
    t0, written = time.perf_counter(), 0
    for k in range(shards):
        rows = min(shard_rows, n - k * shard_rows)
        if f"w{k:05d}-000000" in done:
            continue
        ids, X, _ = world_shard(k, rows, d)
        written += store.append(ids, X, {"backend": "bench/fit_speed world"})
        print(f"  store: shard {k + 1}/{shards} ({written:,} rows in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)



def store_child(args) -> None:
    import numpy as np
    import torch

    from pipeline.config import FitParams, HeadParams, NoiseParams, PropensityParams
    from pipeline.store import EmbeddingStore
    from pipeline.store_matrix import in_store_order
    from stages.evaluate.metrics import label_metrics
    from stages.fit.core import FitInputs, fit_nuisance, method_rows
    from stages.fit.methods import get_method
    from stages.fit.train import train_head

    if args.threads:
        torch.set_num_threads(args.threads)
    t, rss = {}, {}

    def peak_so_far(step):
        rss[step] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    clock = time.perf_counter()
    store = EmbeddingStore(args.store)
    shards = (args.n + args.shard_rows - 1) // args.shard_rows
    facts = [world_shard(k, min(args.shard_rows, args.n - k * args.shard_rows), 0)[2] for k in range(shards)]
    facts = {key: np.concatenate([f[key] for f in facts]) for key in facts[0]}
    import polars as pl

    ids = pl.concat([pl.select((pl.lit(f"w{k:05d}-") + pl.int_range(min(args.shard_rows, args.n - k * args.shard_rows))
                                .cast(pl.String).str.zfill(6)).alias("id"))["id"] for k in range(shards)])
    fit_rows = np.flatnonzero(facts["split"] != "test")
    t["row facts"] = time.perf_counter() - clock
    peak_so_far("row facts")
    clock = time.perf_counter()
    order, X = in_store_order(store, ids.gather(fit_rows))  # the shards' checksums are checked here, once
    rows = fit_rows[order]
    t["open store (ids, checksums)"] = time.perf_counter() - clock
    peak_so_far("open store (ids, checksums)")
    data = FitInputs(X, facts["split"][rows], facts["observed"][rows],
                     np.where(facts["observed"][rows], facts["feedback"][rows], 0))
    params = FitParams(head=HeadParams(max_epochs=args.epochs, patience=args.epochs + 1, threads=args.threads),
                       noise=NoiseParams(rho_pos=0.1, rho_neg=0.2),
                       propensity=PropensityParams(model=args.propensity, pca_dim=args.pca_dim, folds=args.folds))
    method = get_method("causalrm")
    clock, reads = time.perf_counter(), X.read_seconds
    nuisance = fit_nuisance(data, params, [method])
    t["nuisance: projection + propensity"] = time.perf_counter() - clock
    peak_so_far("nuisance: projection + propensity")
    t["  of which store reads (nuisance)"] = X.read_seconds - reads
    heads = {}
    for mode in (["separate", "in-pass"] if args.validate_ab else ["in-pass"]):
        X.release()  # each mode starts from an empty cache of decoded shards
        clock, reads, decodes = time.perf_counter(), X.read_seconds, X.shard_reads
        train, val = method_rows(data, nuisance, method)
        model, result = train_head(X, train, val, params.head, params.guard, validate_in_pass=mode == "in-pass")
        label = "head: every epoch" + (f" (validation {mode})" if args.validate_ab else "")
        t[label] = time.perf_counter() - clock
        peak_so_far(label)
        t[f"  of which store reads ({mode})" if args.validate_ab else "  of which store reads (head)"] = \
            X.read_seconds - reads
        heads[mode] = model, result, X.shard_reads - decodes
    test = np.flatnonzero(facts["split"] == "test")
    T = in_store_order(store, ids.gather(test))
    out = {}
    for mode, (model, result, decodes) in heads.items():
        reward = model.logits(T[1]).numpy()
        out[mode] = {"test_auroc": label_metrics(facts["label"][test][T[0]].astype(float), reward)["auroc"],
                     "s_per_epoch": [c["seconds"] for c in result.curve], "epochs": result.epochs_run,
                     "best_epoch": result.best_epoch, "head_shard_reads": decodes}
    print(json.dumps({
        "steps": t, "peak_gib": rss, "heads": out,
        "train_rows_with_loss": int(len(np.flatnonzero(data.train & data.observed))),
        "fit_rows": int(len(rows)), "store_gb": store.size_bytes() / 2**30, "shard_reads": X.shard_reads,
        "shards": len(store.manifest["shards"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "pca_dim": nuisance.features.pca_dim or args.d, "threads": torch.get_num_threads()}))


def store_main(args) -> None:
    root = Path(args.store)
    t0 = time.perf_counter()
    build_store(root, args.n, args.d, args.shard_rows)
    built = time.perf_counter() - t0
    cmd = [sys.executable, __file__, "--store-child", "--store", str(root), "--n", str(args.n), "--d", str(args.d),
           "--shard-rows", str(args.shard_rows), "--epochs", str(args.epochs), "--threads", str(args.threads),
           "--propensity", args.propensity, "--folds", str(args.folds)] \
        + (["--pca-dim", str(args.pca_dim)] if args.pca_dim else []) + (["--validate-ab"] if args.validate_ab else [])
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        sys.exit(f"the streamed fit failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"streamed fit: N={args.n:,} pairs × D={args.d:,} float32, store {r['store_gb']:.1f} GiB on disk "
          f"(machine memory {mem:.0f} GiB), {r['shards']} shards of {args.shard_rows:,}; causalrm, "
          f"{args.epochs} epochs at most, {r['train_rows_with_loss']:,} train rows with loss, nuisance models on "
          f"{r['pca_dim']} features, torch threads {r['threads']}; store build {built:.0f} s (0 if reused)")
    print("| step | seconds | peak RSS so far, GiB |")
    print("|---|---:|---:|")
    for step, sec in r["steps"].items():
        peak = r["peak_gib"].get(step)
        print(f"| {step} | {sec:.1f} | {'' if peak is None else f'{peak:.2f}'} |")
    print("\n| validation | epochs (best) | seconds an epoch | shard reads | test AUROC (clean labels, evaluation only) |")
    print("|---|---:|---|---:|---:|")
    for mode, h in r["heads"].items():
        print(f"| {mode} | {h['epochs']} ({h['best_epoch']}) | {', '.join(f'{s:.0f}' for s in h['s_per_epoch'])} | "
              f"{h['head_shard_reads']} | {h['test_auroc']:.3f} |")
    print(f"\npeak RSS {r['peak_rss_mb'] / 1024:.2f} GiB; {r['shard_reads']} shard reads in all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=35_000)
    ap.add_argument("--d", type=int, default=4_096)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--propensity", default="logistic")
    ap.add_argument("--pca-dim", type=int, default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--methods", default="naive,ips,dr,noise,causalrm,causalrm_dr")
    ap.add_argument("--store", default=None, help="a store larger than memory at this path (module docstring)")
    ap.add_argument("--shard-rows", type=int, default=65_536)
    ap.add_argument("--validate-ab", action="store_true",
                    help="with --store: fit the head twice, validating after each epoch's pass (the baseline) "
                         "and during the next pass (what fit does)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--store-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.store_child:
        return store_child(args)
    if args.child:
        return child(args)
    if args.store:
        return store_main(args)
    rows = []
    # the first child of a run measured slower whatever its method (cold caches): warm up first
    for k, method in enumerate(["naive"] + args.methods.split(",")):
        cmd = [sys.executable, __file__, "--child", method, "--n", str(args.n), "--d", str(args.d),
               "--epochs", str(1 if k == 0 else args.epochs), "--threads", str(args.threads),
               "--propensity", args.propensity, "--folds", str(args.folds)] \
            + (["--pca-dim", str(args.pca_dim)] if args.pca_dim else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            sys.exit(f"{method} failed:\n{out.stderr[-3000:]}")
        if k:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  done {method}{' (warm-up)' if k == 0 else ''}", file=sys.stderr)
    base = next((r for r in rows if r["method"] == "naive"), rows[0])
    print(f"fit speed: N={args.n:,}, D={args.d:,}, {args.epochs} epochs, propensity {args.propensity} "
          f"({args.folds} folds{', PCA ' + str(args.pca_dim) if args.pca_dim else ''}), "
          f"torch threads {rows[0]['threads']}; embeddings {rows[0]['embeddings_mb']:.0f} MiB")
    print(f"| method | rows/epoch | s/epoch | x naive | nuisance s | peak RSS MiB | x naive |")
    print(f"|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['rows_per_epoch']:,} | {r['s_per_epoch']:.2f} | "
              f"{r['s_per_epoch'] / base['s_per_epoch']:.2f} | {r['nuisance_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
