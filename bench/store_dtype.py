"""A float16 copy of a float32 store: size on disk, time to read every row, how far the values moved.

    .venv/bin/python bench/store_dtype.py cache/embeddings/minilm [--out /tmp/minilm-f16]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.store import EmbeddingStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="a float32 store")
    ap.add_argument("--out", default=None, help="where to build the float16 copy (default: a temp folder, removed)")
    args = ap.parse_args()
    src = EmbeddingStore(args.store)
    out = Path(args.out or f"/tmp/rmpipe-f16-{src.root.name}")
    shutil.rmtree(out, ignore_errors=True)
    m = src.manifest
    dst = EmbeddingStore.create(out, backbone=m["backbone"], spec=m["spec"], dim=m["dim"], dtype="float16")
    dst.merge_from(src)  # what `rmpipe cache merge` does: the rows converted to the target's dtype
    ids = sorted(src.pair_ids())
    reads = []
    for s in (src, dst):
        s = EmbeddingStore(s.root)  # cold: no cached pair ids
        t0 = time.perf_counter()
        reads.append((s.read(ids), time.perf_counter() - t0))
    (a, _), (b, _) = reads
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print("| store_dtype | rows | dim | size on disk | bytes per row | read every row (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s, (_, t) in (("float32", src, reads[0]), ("float16", dst, reads[1])):
        print(f"| {name} | {s.rows} | {s.dim} | {s.disk_bytes() / 2**20:.1f} MiB | {s.disk_bytes() / s.rows:.0f} | {t:.2f} |")
    print(f"\nfloat16 against float32: max |Δ| {np.abs(a - b).max():.2e}, min cosine {cos.min():.8f}, "
          f"disk {dst.disk_bytes() / src.disk_bytes():.2f}x")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
