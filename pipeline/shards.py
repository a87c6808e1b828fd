"""One shard file of the embedding store, checkable on its own.

The manifest lists shards with their size and checksum; each shard also carries, in its Parquet
metadata, the function key it was computed by, its row count and a hash of its contents. That
is what lets a store survive the loss of its manifest, or a writer stopped between a shard's
rename and the manifest update: a shard that passes its own checks is data, whoever lists it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import RmpipeError

META_KEY = b"rmpipe.shard"
SHARD_GLOB = "shard-*.parquet"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(pair_ids: list[str], values: np.ndarray) -> str:
    """SHA-256 of the pair_ids and the stored vectors' bytes (in their stored dtype)."""
    h = hashlib.sha256("\0".join(pair_ids).encode())
    h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def shard_table(pair_ids: list[str], values: np.ndarray, header: dict, exec_info: dict) -> pa.Table:
    """The Parquet table of one shard; ``header`` is the manifest's key fields (backbone, spec,
    spec_hash, dim, dtype), kept in the file so the shard can be checked without the manifest."""
    arrow_type = pa.float16() if values.dtype == np.float16 else pa.float32()
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=arrow_type),
                                               header["dim"])
    meta = {**header, "rows": len(pair_ids), "content": content_hash(pair_ids, values),
            "exec": exec_info}
    table = pa.table({"pair_id": pa.array(pair_ids, pa.string()), "embedding": column})
    return table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str)})


def check_shard_file(path: Path) -> tuple[dict, list[str]]:
    """A shard's own metadata and pair_ids, if its contents match what it says; else RmpipeError."""
    try:
        table = pq.ParquetFile(path).read()
        meta = json.loads(table.schema.metadata[META_KEY])
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
        raise RmpipeError(f"{path}: not a readable store shard") from None
    ids = table["pair_id"].to_pylist()
    values = table["embedding"].combine_chunks().values.to_numpy(zero_copy_only=False)
    if len(ids) != meta.get("rows") or content_hash(ids, values) != meta.get("content"):
        raise RmpipeError(f"{path}: shard contents do not match its own checksum")
    return meta, ids


def manifest_entry(path: Path, rows: int, exec_info: dict) -> dict:
    return {"file": path.name, "rows": rows, "bytes": path.stat().st_size,
            "sha256": file_sha256(path), "exec": exec_info or {}}


def adoptable(root: Path, manifest: dict, have: set[str]) -> tuple[list[dict], list[Path]]:
    """Unlisted shards under ``root``: (entries of those that pass their checks, are of the
    manifest's function and add only new pairs; the paths of the others). Oldest first."""
    listed = {s["file"] for s in manifest["shards"]}
    adopt, reject = [], []
    for path in sorted(root.glob(SHARD_GLOB), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        if path.name in listed:
            continue
        try:
            meta, ids = check_shard_file(path)
        except RmpipeError:
            reject.append(path)
            continue
        if meta.get("spec_hash") != manifest["spec_hash"] or have.intersection(ids):
            reject.append(path)
            continue
        have.update(ids)
        adopt.append(manifest_entry(path, len(ids), meta.get("exec", {})))
    return adopt, reject


def recover_manifest(root: Path, fmt: int, want: str | None = None) -> dict | None:
    """A manifest rebuilt from the shards under ``root`` that pass their own checks: those of the
    function ``want`` (default: the one with most rows). None if no shard passes."""
    by_key: dict[str, dict] = {}
    for path in root.glob(SHARD_GLOB):
        try:
            meta, ids = check_shard_file(path)
        except RmpipeError:
            continue
        key = meta.get("spec_hash")
        by_key.setdefault(key, {"meta": meta, "rows": 0})["rows"] += len(ids)
    if want is not None:
        by_key = {k: v for k, v in by_key.items() if k == want}
    if not by_key:
        return None
    meta = max(by_key.values(), key=lambda v: v["rows"])["meta"]
    manifest = {"format": fmt, "backbone": meta["backbone"], "spec": meta["spec"],
                "spec_hash": meta["spec_hash"], "dim": int(meta["dim"]), "dtype": meta["dtype"],
                "shards": []}
    manifest["shards"], _ = adoptable(root, manifest, set())
    return manifest
