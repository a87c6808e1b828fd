"""`dtype: auto`: bfloat16 where the device computes it natively, float32 elsewhere; the resolved
type is the store's key, so a store never mixes the two; a float16 store halves the disk."""

import dataclasses

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from tests.stages.embed.embed_helpers import all_ids

from pipeline.config import BackboneSpec, load_params
from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore, spec_hash
from pipeline.table import make_pair_id
from stages.embed.backbones import function_spec
from stages.embed.precision import compute_dtype, cpu_bf16_flag, native_bf16
from stages.embed.run import embed

X86_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
X86_AMX = "flags\t\t: fpu avx512f amx_tile amx_bf16 amx_int8\n"
X86_PLAIN = "flags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
ARM_BF16 = "Features\t: fp asimd sve bf16 i8mm\n"
ARM_PLAIN = "Features\t: fp asimd\n"


@pytest.mark.parametrize("text,flag", [(X86_BF16, "avx512_bf16"), (X86_AMX, "amx_bf16"),
                                       (X86_PLAIN, None), (ARM_BF16, "bf16"), (ARM_PLAIN, None), ("", None)])
def test_native_bf16_is_read_from_the_cpu_flags(text, flag):
    assert cpu_bf16_flag(text) == flag


def test_auto_is_bfloat16_only_where_native_and_explicit_types_are_kept():
    native = native_bf16("cpu") is not None
    assert compute_dtype("auto", "cpu")[0] == ("bfloat16" if native else "float32")
    assert compute_dtype("auto", "mps") == ("float32", "auto: no native bfloat16 on mps")
    for dtype in ("float32", "bfloat16", "float16"):
        assert compute_dtype(dtype, "cpu") == (dtype, "set")


def test_the_key_holds_the_resolved_dtype_not_auto():
    spec = BackboneSpec(model="org/m", dtype="auto", device="cpu")
    resolved = compute_dtype("auto", "cpu")[0]
    assert function_spec(spec, "w")["dtype"] == resolved
    assert spec_hash(function_spec(spec, "w")) == spec_hash(
        function_spec(dataclasses.replace(spec, dtype=resolved), "w"))
    bf16, f32 = (spec_hash(function_spec(dataclasses.replace(spec, dtype=d), "w")) for d in ("bfloat16", "float32"))
    assert bf16 != f32


def with_embed(params, **fields):
    return dataclasses.replace(params, embed=dataclasses.replace(params.embed, **fields))


def with_dtype(params, dtype):
    spec = dataclasses.replace(params.backbones["tiny"], dtype=dtype)
    return dataclasses.replace(params, backbones={**params.backbones, "tiny": spec})


@pytest.mark.slow
def test_a_float32_store_refuses_bfloat16_by_name_and_says_which_was_used(llama_params):
    f32 = embed(with_dtype(llama_params, "float32"), "tiny", progress=False)
    assert "float32 (set)" in f32.line()
    with pytest.raises(RmpipeError, match=r"changed: dtype\)"):
        embed(with_dtype(llama_params, "bfloat16"), "tiny", progress=False)
    ids = all_ids(llama_params)
    ref = EmbeddingStore(llama_params.store_path("tiny")).read(ids)
    bf16 = embed(with_dtype(llama_params, "bfloat16"), "tiny", progress=False, rebuild=True)
    assert bf16.computed == 60 and "bfloat16 (set)" in bf16.line()
    got = EmbeddingStore(llama_params.store_path("tiny")).read(ids)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert np.abs(got - ref).max() > 1e-4 and cos.min() > 0.99  # computed in bfloat16, close


@pytest.mark.slow
def test_a_float16_store_halves_the_vectors_and_reads_back_float32(llama_params, tmp_path):
    embed(llama_params, "tiny", progress=False)
    half = with_embed(llama_params, store_dtype="float16", store_dir=str(tmp_path / "half"))
    embed(half, "tiny", progress=False)
    ids = all_ids(llama_params)
    full, small = (EmbeddingStore(p.store_path("tiny")) for p in (llama_params, half))
    small.verify()
    shard = pq.ParquetFile(small.root / small.manifest["shards"][0]["file"])
    assert str(shard.schema_arrow.field("embedding").type.value_type) == "halffloat"
    want = full.read(ids)
    np.testing.assert_array_equal(small.read(ids), want.astype(np.float16).astype(np.float32))
    assert small.size_bytes() < full.size_bytes()
    grown = pl.DataFrame({"pair_id": [make_pair_id("a new prompt", "an answer")],
                          "prompt": ["a new prompt"], "response": ["an answer"]})
    with pytest.raises(RmpipeError, match=r"store holds float16 vectors, embed\.store_dtype asks for float32"):
        embed(with_embed(half, store_dtype="float32"), "tiny", progress=False, table=grown)
