"""Device and dtype resolution for ``--device`` / ``--dtype``.

``auto`` device: CUDA when available, else CPU. ``auto`` dtype: bfloat16 on CUDA devices that
support it (float16 on older ones), bfloat16 on CPUs whose flags advertise native bf16 matrix
instructions (``amx_bf16`` or ``avx512_bf16`` in /proc/cpuinfo), float32 otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, FrozenSet

import torch

from aot_cli import devices

from aot_cli.models.errors import ModelLoadError

DTYPE_NAMES: Dict[torch.dtype, str] = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; anything else is parsed by torch.
    Raises ModelLoadError for an unknown or absent device."""
    try:
        return devices.resolve_device(name)
    except devices.DeviceError as e:
        raise ModelLoadError(str(e)) from None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> FrozenSet[str]:
    """The CPU feature flags listed in ``cpuinfo`` (empty when the file is absent)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU advertises native bf16 matmul instructions (AMX or AVX512-BF16)."""
    flags = cpu_flags()
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"`` -> bf16 on CUDA (fp16 without bf16 support) and on CPUs with fast bf16, else
    fp32; otherwise one of fp32/bf16/fp16 (or float32/bfloat16/float16)."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    try:
        return devices.named_dtype(name)
    except devices.DeviceError as e:
        raise ModelLoadError(str(e)) from None
