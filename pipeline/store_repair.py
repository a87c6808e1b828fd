"""Recovering an embedding store after a crash or damage: adopt finished shards the manifest does
not list yet, rebuild a lost manifest from the shards that pass their own checks, drop listed
shards that fail theirs (``rmpipe cache verify --repair``). Each shard checks itself
(:mod:`pipeline.shards`), so what survives is data whoever listed it."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline.atomic import write_json
from pipeline.errors import RmpipeError
from pipeline.shards import adoptable, file_sha256, recover_manifest
from pipeline.store_manifest import FORMAT, MANIFEST, locked, read_manifest, writing


def check_shard(root: Path, shard: dict) -> None:
    """Refuse a listed shard that is missing, or whose size or checksum differs from its entry."""
    path = root / shard["file"]
    if not path.exists():
        raise RmpipeError(f"{path}: shard listed in the manifest is missing")
    if path.stat().st_size != shard["bytes"] or file_sha256(path) != shard["sha256"]:
        raise RmpipeError(f"{path}: shard is truncated or corrupted (checksum mismatch); "
                          f"run `rmpipe cache verify --repair`, then `rmpipe embed` again")


def tidy(root: Path, manifest: dict, notes: list[str]) -> None:
    """Adopt unlisted shards that pass their own checks (a writer stopped between a shard's
    rename and its manifest update), delete the other strays and temp files, and write the
    manifest if it changed. Call under the lock: then no writer is between those two steps."""
    have: set[str] = set()
    for shard in manifest["shards"]:
        path = root / shard["file"]
        if path.exists():
            have.update(pq.ParquetFile(path).read(columns=["pair_id"])["pair_id"].to_pylist())
    adopt, reject = adoptable(root, manifest, have)
    for path in reject + list(root.glob(".*.tmp")):
        path.unlink(missing_ok=True)
    if adopt:
        manifest["shards"].extend(adopt)
        write_json(root / MANIFEST, manifest)
        notes.append(f"adopted {len(adopt)} finished shard(s) ({sum(s['rows'] for s in adopt)} "
                     f"rows) that the manifest did not list yet")


def rebuild(root: Path, want: str | None, notes: list[str]) -> dict | None:
    """The manifest rebuilt from the shards that pass their own checks, written; None if none."""
    manifest = recover_manifest(root, FORMAT, want)
    if manifest is None:
        (root / MANIFEST).unlink(missing_ok=True)
        notes.append("manifest unreadable and no shard passed its checks: starting afresh")
        return None
    write_json(root / MANIFEST, manifest)
    notes.append(f"manifest unreadable: rebuilt from {len(manifest['shards'])} shard(s) "
                 f"({sum(s['rows'] for s in manifest['shards'])} rows) that pass their checks")
    return manifest


def repair_store(root: str | Path) -> tuple[list[str], list[str]]:
    """Make the store at ``root`` whole again: rebuild an unreadable or missing manifest from the
    shards that pass their own checks, drop listed shards that fail, adopt finished unlisted
    ones. Returns (dropped shard files, notes on what was recovered)."""
    root = Path(root)
    if not root.is_dir():
        raise RmpipeError(f"{root}: no embedding store here")
    notes: list[str] = []
    with writing(root), locked(root):
        try:
            manifest = read_manifest(root / MANIFEST)
        except RmpipeError:
            manifest = rebuild(root, None, notes)
            if manifest is None:
                raise RmpipeError(f"{root}: manifest unreadable and no shard passes its checks; "
                                  f"delete the folder and run `rmpipe embed`") from None
        dropped, good = [], []
        for shard in manifest["shards"]:
            try:
                check_shard(root, shard)
                good.append(shard)
            except RmpipeError:
                dropped.append(shard["file"])
        if dropped:
            manifest["shards"] = good
            write_json(root / MANIFEST, manifest)
            for name in dropped:
                (root / name).unlink(missing_ok=True)
        tidy(root, manifest, notes)
    return dropped, notes
