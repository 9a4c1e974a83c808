"""Device and dtype names shared by everything that loads a model (towers and LLMs)."""
from __future__ import annotations

from typing import Dict

import torch

DTYPES: Dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


class DeviceError(ValueError):
    """An unknown or absent device, or an unknown dtype name (one-line message)."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; anything else is parsed by torch
    (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {name}: not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available on this machine")
    return device


def named_dtype(name: str) -> torch.dtype:
    """fp32/bf16/fp16 (or float32/bfloat16/float16) -> the torch dtype."""
    if name not in DTYPES:
        raise DeviceError(f"--dtype {name}: unknown dtype (use auto, fp32, bf16 or fp16)")
    return DTYPES[name]
