"""Which float type a backbone computes in: ``dtype: auto`` is bfloat16 where the device does
bfloat16 arithmetic natively, float32 elsewhere.

Native support matters because emulated bfloat16 is slower than float32: a CPU without it
converts every operand. A CPU has it when ``/proc/cpuinfo`` lists ``avx512_bf16`` or
``amx_bf16`` (x86) or ``bf16`` (aarch64); a CUDA device when torch says so without emulation
(compute capability 8.0 and later). On a 2-core EPYC with ``avx512_bf16`` MiniLM ran 3.3x and
SmolLM2-135M 3.7x faster in bfloat16 (docs/scale.md).

The resolved type, not ``auto``, is part of the store's key: bfloat16 vectors differ from
float32 ones by ~1e-2 per coordinate (cosine ~0.9999), a hundred times what backend or batch
changes do, so a store filled on a bfloat16 machine is refused by name on a float32 one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX-512 BF16, x86 AMX, aarch64 FEAT_BF16


def cpu_bf16_flag(cpuinfo: str) -> str | None:
    """The first native-bfloat16 flag in a ``/proc/cpuinfo`` text, or None."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return next((f for f in CPU_FLAGS if f in flags), None)


@lru_cache(maxsize=None)
def native_bf16(device: str) -> str | None:
    """Why ``device`` (cpu, cuda, cuda:N, mps) computes bfloat16 natively, or None if it does not."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name(device)} supports bfloat16"
        return None
    if device == "cpu":
        try:
            flag = cpu_bf16_flag(Path("/proc/cpuinfo").read_text())
        except OSError:
            return None
        return f"cpu has {flag}" if flag else None
    return None


def compute_dtype(dtype: str, device: str) -> tuple[str, str]:
    """(the dtype a backbone set to ``dtype`` computes in on ``device``, why). Explicit types
    are kept as they are; ``auto`` becomes bfloat16 where supported natively, else float32."""
    if dtype != "auto":
        return dtype, "set"
    reason = native_bf16(device)
    return ("bfloat16", f"auto: {reason}") if reason else ("float32", f"auto: no native bfloat16 on {device}")


def resolved_device(device: str) -> str:
    """``auto`` as the hf backend resolves it (cuda when torch sees one, else cpu)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def spec_dtype(spec) -> tuple[str, str]:
    """:func:`compute_dtype` for a :class:`~pipeline.config.BackboneSpec` on its own device."""
    return compute_dtype(spec.dtype, resolved_device(spec.device))
