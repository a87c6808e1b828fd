"""The embedding backend for a backbone's spec (hf or vLLM), imported only when chosen: one
place for the local engine, the server's embedder and the Ray engine's actors."""

from __future__ import annotations

from pipeline.config import BackboneSpec
from stages.embed.precision import spec_dtype


def make_backend(spec: BackboneSpec, path: str):
    """The backend object for ``spec``: imported only when chosen."""
    dtype = spec_dtype(spec)[0]
    if spec.backend == "vllm":
        from stages.embed.vllm_backend import VLLMBackend

        return VLLMBackend(path, pooling=spec.pooling, layer=spec.layer, dtype=dtype,
                           max_tokens=spec.max_tokens, batch_tokens=spec.batch_tokens,
                           revision=spec.revision, device=spec.device)
    from stages.embed.hf_backend import HFBackend

    return HFBackend(path, pooling=spec.pooling, layer=spec.layer, dtype=dtype,
                     device=spec.device, batch_tokens=spec.batch_tokens, revision=spec.revision)
