"""The embedding store: one folder per backbone, Parquet shards plus a manifest.

Stage one writes it, stage two reads it; they meet nowhere else. The manifest carries the hash
of the embedding *function* (model, weights, pooling, layer, max tokens, template, dtype), so
embeddings of one function are never mixed with another's. Shards are immutable: written under
a temporary name, renamed, then listed in the manifest (also replaced atomically), all under a
file lock, so a crash or a second concurrent run never leaves a half-written or duplicated row.
A process killed between rename and manifest update leaves an unlisted shard (or a temp file):
the next writer deletes such orphans under the lock, so they never count as data.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, write_json
from pipeline.errors import RmpipeError

FORMAT = 1
MANIFEST = "manifest.json"
LOCK = ".lock"


def spec_hash(spec: dict) -> str:
    """Stable hash of an embedding function's definition (canonical JSON, SHA-256, 16 hex)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class EmbeddingStore:
    """A backbone's store at ``root`` (``cache/embeddings/<backbone>``).

    Open an existing one with ``EmbeddingStore(root)``; make or reopen one for a given function
    with :meth:`create`.
    """

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        self._verified: set[str] = set()
        self._ids: dict[str, list[str]] = {}  # shard file -> its pair_ids (shards are immutable)
        if not (self.root / MANIFEST).exists():
            raise RmpipeError(f"{self.root}: no embedding store here (run `rmpipe embed` first)")

    # --- creation ------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, backbone: str, spec: dict, dim: int,
               dtype: str = "float32", rebuild: bool = False) -> "EmbeddingStore":
        """Open the store at ``root`` for embedding function ``spec``, creating it if absent.

        A store made by a different function is refused, naming the fields that differ, unless
        ``rebuild`` is set, in which case its shards are deleted first.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        wanted = spec_hash(spec)
        with _locked(root):
            manifest_path = root / MANIFEST
            if manifest_path.exists():
                manifest = _read_manifest(manifest_path)
                if manifest["spec_hash"] != wanted:
                    if not rebuild:
                        changed = sorted(k for k in set(spec) | set(manifest["spec"])
                                         if spec.get(k) != manifest["spec"].get(k))
                        raise RmpipeError(
                            f"{root}: store for backbone {manifest['backbone']!r} was built by "
                            f"embedding function {manifest['spec_hash']}, not {wanted} (changed: "
                            f"{', '.join(changed)}); rebuild it or use another backbone name")
                    for shard in manifest["shards"]:
                        (root / shard["file"]).unlink(missing_ok=True)
                elif manifest["dim"] != dim:
                    raise RmpipeError(f"{root}: store has dimension {manifest['dim']}, "
                                      f"the backbone gives {dim}")
                else:
                    _remove_orphans(root, manifest)
                    return cls(root)
            write_json(manifest_path, {
                "format": FORMAT, "backbone": backbone, "spec": spec, "spec_hash": wanted,
                "dim": int(dim), "dtype": dtype, "shards": [],
            })
        return cls(root)

    # --- metadata ------------------------------------------------------------------------
    @property
    def manifest(self) -> dict:
        return _read_manifest(self.root / MANIFEST)

    @property
    def backbone(self) -> str:
        return self.manifest["backbone"]

    @property
    def spec_hash(self) -> str:
        return self.manifest["spec_hash"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.manifest["shards"])

    def size_bytes(self) -> int:
        return sum(s["bytes"] for s in self.manifest["shards"])

    def pair_ids(self) -> set[str]:
        """The pair_ids already embedded."""
        ids: set[str] = set()
        for shard in self.manifest["shards"]:
            ids.update(self._shard_ids(shard))
        return ids

    def _shard_ids(self, shard: dict) -> list[str]:
        if shard["file"] not in self._ids:
            self._ids[shard["file"]] = self._read_shard(shard, ["pair_id"])["pair_id"].to_pylist()
        return self._ids[shard["file"]]

    def disk_bytes(self) -> int:
        """Bytes on disk of everything in the folder (shards, manifest, stray files)."""
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())

    # --- writing -------------------------------------------------------------------------
    def append(self, pair_ids: Sequence[str], embeddings: np.ndarray,
               exec_info: dict | None = None) -> int:
        """Add one shard with the given rows, skipping pair_ids the store already holds (a
        concurrent run may have written them). Returns the number of rows written."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(pair_ids):
            raise ValueError(f"embeddings {embeddings.shape} do not match {len(pair_ids)} pair_ids")
        with _locked(self.root):
            manifest = self.manifest
            if embeddings.shape[1] != manifest["dim"]:
                raise RmpipeError(f"{self.root}: embeddings have dimension {embeddings.shape[1]}, "
                                  f"store has {manifest['dim']}")
            have = self.pair_ids()
            keep, seen = [], set()
            for i, pid in enumerate(pair_ids):
                if pid not in have and pid not in seen:
                    keep.append(i)
                    seen.add(pid)
            if not keep:
                return 0
            dtype = np.dtype(manifest["dtype"])
            values = embeddings[keep].astype(dtype, copy=False)
            arrow_type = pa.float16() if dtype == np.float16 else pa.float32()
            column = pa.FixedSizeListArray.from_arrays(
                pa.array(values.reshape(-1), type=arrow_type), manifest["dim"])
            table = pa.table({"pair_id": pa.array([pair_ids[i] for i in keep], pa.string()),
                              "embedding": column})
            name = f"shard-{uuid.uuid4().hex[:12]}.parquet"
            target = self.root / name
            with atomic_path(target) as tmp:
                pq.write_table(table, tmp)
            manifest["shards"].append({
                "file": name, "rows": len(keep), "bytes": target.stat().st_size,
                "sha256": file_sha256(target), "exec": exec_info or {},
            })
            write_json(self.root / MANIFEST, manifest)
        return len(keep)

    # --- reading -------------------------------------------------------------------------
    def read(self, pair_ids: Sequence[str]) -> np.ndarray:
        """Embeddings for ``pair_ids`` in their order (repeats allowed), float32 (n, dim)."""
        wanted: dict[str, list[int]] = {}
        for i, pid in enumerate(pair_ids):
            wanted.setdefault(pid, []).append(i)
        manifest = self.manifest
        dim = int(manifest["dim"])
        out = np.empty((len(pair_ids), dim), dtype=np.float32)
        for shard in manifest["shards"]:
            ids = self._shard_ids(shard)
            rows = [r for r, pid in enumerate(ids) if pid in wanted]
            if not rows:
                continue
            values = self._shard_values(shard, dim)
            for r in rows:
                out[wanted.pop(ids[r])] = values[r]
        if wanted:
            missing = list(wanted)
            raise RmpipeError(f"{self.root}: {len(missing)} pair_id(s) not embedded, e.g. "
                              f"{missing[0]} (run `rmpipe embed --backbone {self.backbone}`)")
        return out

    def iter_shards(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(pair_ids, embeddings)`` shard by shard: one pass over the whole store in the memory
        of one shard (the server reads it once at start-up)."""
        manifest = self.manifest
        for shard in manifest["shards"]:
            yield self._shard_ids(shard), self._shard_values(shard, int(manifest["dim"]))

    def _shard_values(self, shard: dict, dim: int) -> np.ndarray:
        col = self._read_shard(shard, ["embedding"])["embedding"].combine_chunks()
        return col.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)

    def verify(self) -> None:
        """Check every shard against the manifest (exists, size, checksum, row count)."""
        for shard in self.manifest["shards"]:
            self._check_shard(shard)

    def repair(self) -> list[str]:
        """Drop shards that fail :meth:`verify` from the manifest (and disk), so that the next
        ``rmpipe embed`` recomputes just their rows. Returns the dropped file names."""
        dropped = []
        with _locked(self.root):
            manifest = self.manifest
            good = []
            for shard in manifest["shards"]:
                try:
                    self._check_shard(shard)
                    good.append(shard)
                except RmpipeError:
                    dropped.append(shard["file"])
            if dropped:
                manifest["shards"] = good
                write_json(self.root / MANIFEST, manifest)
                for name in dropped:
                    (self.root / name).unlink(missing_ok=True)
        return dropped

    def _check_shard(self, shard: dict) -> None:
        if shard["file"] in self._verified:
            return
        path = self.root / shard["file"]
        if not path.exists():
            raise RmpipeError(f"{path}: shard listed in the manifest is missing")
        if path.stat().st_size != shard["bytes"] or file_sha256(path) != shard["sha256"]:
            raise RmpipeError(f"{path}: shard is truncated or corrupted (checksum mismatch); "
                              f"run `rmpipe cache verify --repair`, then `rmpipe embed` again")
        self._verified.add(shard["file"])

    def _read_shard(self, shard: dict, columns: list[str]) -> pa.Table:
        self._check_shard(shard)
        path = self.root / shard["file"]
        table = pq.read_table(path, columns=columns, memory_map=True)
        if table.num_rows != shard["rows"]:
            raise RmpipeError(f"{path}: shard has {table.num_rows} rows, manifest says {shard['rows']}")
        return table

    def merge_from(self, other: "EmbeddingStore", batch: int = 4096) -> int:
        """Copy the rows of ``other`` (same embedding function) that this store lacks: how shards
        filled on machines without a shared disk come together. Returns rows added."""
        if other.spec_hash != self.spec_hash:
            raise RmpipeError(f"{other.root}: built by embedding function {other.spec_hash}, "
                              f"{self.root} by {self.spec_hash}; they cannot be merged")
        todo = sorted(other.pair_ids() - self.pair_ids())
        added = 0
        for start in range(0, len(todo), batch):
            ids = todo[start:start + batch]
            added += self.append(ids, other.read(ids), {"merged_from": str(other.root)})
        return added


def _remove_orphans(root: Path, manifest: dict) -> None:
    """Delete shard or temp files the manifest does not list (left by a killed writer).
    Call under the lock: then no other writer is between its rename and its manifest update."""
    listed = {s["file"] for s in manifest["shards"]}
    for path in root.iterdir():
        name = path.name
        stray_shard = name.startswith("shard-") and name.endswith(".parquet") and name not in listed
        stray_temp = name.startswith(".") and name.endswith(".tmp")
        if stray_shard or stray_temp:
            path.unlink(missing_ok=True)


def list_stores(store_dir: str | Path) -> list[EmbeddingStore]:
    """Every store under ``store_dir`` (``cache/embeddings``)."""
    store_dir = Path(store_dir)
    if not store_dir.exists():
        return []
    return [EmbeddingStore(p) for p in sorted(store_dir.iterdir()) if (p / MANIFEST).exists()]


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise RmpipeError(f"{path}: unreadable store manifest") from None
    if manifest.get("format") != FORMAT:
        raise RmpipeError(f"{path}: store format {manifest.get('format')}, expected {FORMAT}")
    return manifest


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the store, held across read-modify-write of the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
