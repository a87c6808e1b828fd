"""The reward server's throughput on new pairs (what an RLHF run sends) against the batch path,
`rmpipe score`'s, on the same kind of pairs in the same process, as a table.

A real server (uvicorn, loopback only; clients in a process of their own, bench/serve_clients.py,
or with ``--clients thread`` on threads of this one) on a 240-row built-in
project in a temporary folder, MiniLM on CPU. Every pair sent is new (never seen, never
repeated). Each concurrency level runs ``--warmup`` seconds of load, then a window of ``--seconds``
whose completed requests give the steady-state rate (see :func:`run_level`); right
before and after it, ``--batch-pairs`` new pairs go through ``rmpipe score``'s embedding path
(:func:`stages.embed.run.embed`, model start-up excluded: its own clock starts after the load),
and the level's ratio is against the mean of those two batch rates, so a machine whose load
drifts moves both sides. A last row is pairs already in the store (no forward pass).

    python bench/serve_throughput.py [--seconds 20] [--pairs 8] [--levels 1 4 8 16] [--dtypes auto float32]
                                     [--torch-threads N] [--same-passes] [--server-cores 0]

``--server-cores`` splits the machine as a deployment does, where the trainer's clients run
elsewhere: this process (the server, its event loop, and the batch path it is compared with) on
those cores, one torch thread each, and the client processes on the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_clients import Bodies, load  # noqa: E402

from pipeline.config import EmbedParams, EvaluateParams, load_params  # noqa: E402
from pipeline.table import pair_ids  # noqa: E402
from rmpipe.serve import RewardModel, ServerThread, ServeSettings, build_app  # noqa: E402
from stages.embed.precision import spec_dtype  # noqa: E402
from stages.embed.run import embed  # noqa: E402
from stages.fit.run import fit  # noqa: E402
from stages.prepare.run import prepare  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIENTS = {"process": "in a process of their own", "processes": "in a process each",
           "thread": "on threads of the server's process"}
NUMBERS = itertools.count(10**6, 10**5)  # blocks of pair numbers, so no pair is sent twice


def fresh(n: int) -> Bodies:
    """Bodies of ``n`` new pairs each, numbered from a block of their own (same digits throughout)."""
    assert n <= 10**5
    return Bodies(n, next(NUMBERS))


def project(root: Path, dtype: str):
    params = load_params(REPO / "params.yaml")
    source = dataclasses.replace(params.prepare.source, kind="builtin", rows=240)
    minilm = dataclasses.replace(params.backbone("minilm"), dtype=dtype)
    params = dataclasses.replace(
        params, dataset="bench", data_dir=str(root / "data"),
        backbones={**params.backbones, "minilm": minilm},
        prepare=dataclasses.replace(params.prepare, source=source),
        embed=EmbedParams(backbones=("minilm",), store_dir=str(root / "emb"), models_dir=str(root / "models")),
        fit=dataclasses.replace(params.fit, heads_dir=str(root / "heads"), methods=("naive",)),
        evaluate=EvaluateParams(reports_dir=str(root / "reports")))
    prepare(params)
    embed(params, "minilm", progress=False)
    return params, fit(params, "minilm", ["naive"], progress=False, log=lambda _: None)["naive"]


def batch_rate(params, n: int, batch_tokens: int | None = None) -> float:
    """Pairs/s of ``rmpipe score``'s embedding of ``n`` new pairs (tokenise, forward, commit);
    ``batch_tokens`` overrides the backbone's padded tokens a forward pass (an execution setting,
    so the same store)."""
    if batch_tokens:
        minilm = dataclasses.replace(params.backbone("minilm"), batch_tokens=batch_tokens)
        params = dataclasses.replace(params, backbones={**params.backbones, "minilm": minilm})
    pairs = fresh(n)()
    prompts, responses = [p["prompt"] for p in pairs], [p["response"] for p in pairs]
    table = pl.DataFrame({"pair_id": pair_ids(prompts, responses), "prompt": prompts, "response": responses})
    summary = embed(params, "minilm", table=table, progress=False)
    assert summary.computed == n, summary
    return summary.computed / summary.seconds


def run_level(url: str, bodies: Bodies, concurrency: int, seconds: float, warmup: float,
              stats: dict, clients: str = "process", client_cores: set[int] | None = None) -> dict:
    """Steady-state rate of ``concurrency`` clients (bench/serve_clients.py: ``clients`` "process",
    all in one process of their own; "processes", one process a client; "thread", on threads of
    this one): they run ``warmup`` seconds before the window opens and on
    until it closes, and only requests that end inside the window count, over its length. A rate
    from requests started in the window instead also counts the pipeline filling and draining,
    about a batch each way, which weighs most at high concurrency. ``stats`` (the server's
    counters) is read as the window opens and closes. ``client_cores``: the cores the client
    processes run on."""
    seen, timers = [], []

    def on_window(start: float, end: float) -> None:
        now = time.perf_counter()
        for at in (start, end):
            timers.append(threading.Timer(max(at - now, 0), lambda: seen.append(dict(stats))))
            timers[-1].start()

    if clients in ("process", "processes"):
        job = {"url": url, "concurrency": concurrency, "warmup": warmup, "seconds": seconds,
               "pairs": bodies.pairs, "first": bodies.next, "stored": bodies.stored}
        jobs = [job]
        if clients == "processes":  # one a client, each numbering its pairs from a block of its own
            start = time.perf_counter() + warmup
            block = 10**5 // concurrency
            jobs = [{**job, "concurrency": 1, "start": start, "first": bodies.next + k * block}
                    for k in range(concurrency)]
        pin = (lambda: os.sched_setaffinity(0, client_cores)) if client_cores else None
        procs = [subprocess.Popen([sys.executable, str(REPO / "bench" / "serve_clients.py")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pin)
                 for _ in jobs]
        for proc, j in zip(procs, jobs):
            proc.stdin.write(json.dumps(j))
            proc.stdin.close()
        windows = [json.loads(proc.stdout.readline()) for proc in procs]
        on_window(windows[0]["start"], windows[0]["end"])
        outs = [json.loads(proc.stdout.readline() or "null") for proc in procs]
        if any(proc.wait() != 0 for proc in procs) or None in outs:
            sys.exit(f"a client process failed (exits {[proc.returncode for proc in procs]})")
        ends = [t for out in outs for t in out["ends"]]
        latencies = [t for out in outs for t in out["latencies"]]
    else:
        ends, latencies = load(url, bodies, concurrency, warmup, seconds, on_window)
    for t in timers:
        t.join()
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"requests": len(ends), "rps": len(ends) / seconds,
            "p50": statistics.median(latencies) * 1000, "p95": q[18] * 1000,
            "batches": seen[1]["micro_batches"] - seen[0]["micro_batches"],
            "forwards": seen[1]["forward_batches"] - seen[0]["forward_batches"]}


def new_pairs_level(params, url: str, concurrency: int, args, stats: dict, clients: str = "process",
                    pass_tokens: int | None = None, client_cores: set[int] | None = None) -> dict:
    """One level on new pairs (a block of 10^5 numbers: ~20 min at 80 pairs/s), between two batch
    runs: :func:`run_level`'s figures with ``pairs_s``, ``batch`` (their mean) and ``spread``.
    ``pass_tokens``: also the batch rate in forward passes of that many padded tokens, the size of
    the server's passes (``in_passes``), before and after too."""
    in_passes = [batch_rate(params, args.batch_pairs, pass_tokens)] if pass_tokens else []
    before = batch_rate(params, args.batch_pairs)
    r = run_level(url, fresh(args.pairs), concurrency, args.seconds, args.warmup, stats, clients, client_cores)
    after = batch_rate(params, args.batch_pairs)
    in_passes += [batch_rate(params, args.batch_pairs, pass_tokens)] if pass_tokens else []
    r.update(pairs_s=r["rps"] * args.pairs, batch=(before + after) / 2,
             spread=abs(before - after) / ((before + after) / 2),
             in_passes=statistics.mean(in_passes) if in_passes else None)
    return r


def bench_dtype(dtype: str, args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        params, head = project(Path(tmp), dtype)
        resolved = spec_dtype(params.backbone("minilm"))[0]
        model = RewardModel(params, head)
        stored = pl.read_parquet(params.table_path).select("prompt", "response").unique(maintain_order=True)
        stored = [{"prompt": p, "response": r} for p, r in stored.iter_rows()]

        batch_rate(params, args.batch_pairs)  # the batch path's first shapes, not counted
        one = fresh(1)()[0]
        tokens = len(model.embedder.encoder.encode([one["prompt"]], [one["response"]]).ids[0])
        budget = model.embedder.backend.batch_tokens
        with ServerThread(build_app(model, ServeSettings())) as url:
            for concurrency in args.levels:
                in_play = concurrency * args.pairs * tokens  # one pass holds them all when within budget
                pass_tokens = in_play if args.same_passes and in_play < budget else None
                r = new_pairs_level(params, url, concurrency, args, model.stats, args.clients, pass_tokens,
                                    args.client_cores)
                rows.append({**r, "kind": "new", "dtype": resolved, "concurrency": concurrency})
            concurrency = max(args.levels)
            r = run_level(url, Bodies(args.pairs, stored=stored), concurrency, min(args.seconds, 5),
                          min(args.warmup, 2), model.stats, args.clients, args.client_cores)
            r.update(kind="stored", dtype=resolved, concurrency=concurrency, pairs_s=r["rps"] * args.pairs,
                     batch=None, spread=None, in_passes=None)
            rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20, help="counted seconds per level")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per request")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16], help="concurrency levels")
    ap.add_argument("--warmup", type=float, default=5, help="seconds of load before the window opens")
    ap.add_argument("--batch-pairs", type=int, default=1024, help="new pairs per batch-rate run")
    ap.add_argument("--dtypes", nargs="+", default=["auto"], help="backbone dtypes (auto, float32, bfloat16)")
    ap.add_argument("--clients", choices=["process", "processes", "thread"], default="process",
                    help="clients in a process of their own (as an RLHF trainer's are), in one process "
                         "each (as a trainer's rollout workers), or on threads of the server's")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch's threads for both paths (default: one a core); fewer leave a core to "
                         "the event loop and the clients")
    ap.add_argument("--same-passes", action="store_true",
                    help="also the batch rate in forward passes the size of the server's (the pairs the "
                         "clients have in play), to split the ratio into the server's own cost and the load's")
    ap.add_argument("--server-cores", type=int, nargs="+", default=None,
                    help="pin this process (server and batch path, one torch thread a core) to these cores "
                         "and the client processes to the others, as where the clients run elsewhere")
    args = ap.parse_args()
    import torch

    args.client_cores = None
    if args.server_cores:
        server, machine = set(args.server_cores), os.sched_getaffinity(0)
        args.client_cores = machine - server
        if not server < machine or args.clients == "thread":
            sys.exit(f"--server-cores {args.server_cores}: needs cores of {sorted(machine)} with some left "
                     "for the clients, and client processes (not --clients thread)")
        os.sched_setaffinity(0, server)
        args.torch_threads = len(server)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    rows = [r for dtype in args.dtypes for r in bench_dtype(dtype, args)]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    split = (f"; server on cores {sorted(args.server_cores)}, clients on {sorted(args.client_cores)}"
             if args.server_cores else "")
    print(f"\nrmpipe serve vs rmpipe score, MiniLM on CPU ({torch.get_num_threads()} torch threads{split}), "
          f"{args.pairs} new pairs a request, {args.seconds:g} s a level, clients {CLIENTS[args.clients]}; "
          f"load average after: {load}\n")
    same = args.same_passes
    print("| pairs | dtype | concurrency | requests | serve pairs/s | score pairs/s (±) | serve / score "
          + ("| score in the server's passes | serve / that " if same else "")
          + "| p50 ms | p95 ms | micro-batches | forward passes |")
    print("|---|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if same else "") + "---:|---:|---:|---:|")
    for r in rows:
        batch = f"{r['batch']:.0f} (±{r['spread'] / 2:.0%})" if r["batch"] else "-"
        ratio = f"{r['pairs_s'] / r['batch']:.2f}" if r["batch"] else "-"
        passes = ""
        if same:  # a level whose pairs in play exceed one pass has the batch path's passes
            own = r["in_passes"] or r["batch"]
            passes = f"{own:.0f} | {r['pairs_s'] / own:.2f} | " if own else "- | - | "
        print(f"| {r['kind']} | {r['dtype']} | {r['concurrency']} | {r['requests']} | {r['pairs_s']:.0f} | "
              f"{batch} | {ratio} | {passes}{r['p50']:.0f} | {r['p95']:.0f} | {r['batches']} | {r['forwards']} |")


if __name__ == "__main__":
    main()
