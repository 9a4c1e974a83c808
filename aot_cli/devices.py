"""Device and dtype names shared by everything that loads a model (towers and LLMs). Imports
torch only where the answer needs it: the dtype names, ``cpu``, and ``auto`` on a machine without
a GPU driver resolve without it (so a rerun with nothing to do never pays for importing torch)."""
from __future__ import annotations

import ctypes.util
import os
from typing import TYPE_CHECKING, Dict

if TYPE_CHECKING:
    import torch

#: Accepted ``--dtype`` spellings -> the short name recorded in caches.
DTYPE_ALIASES: Dict[str, str] = {
    "fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16",
}
_TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: Device nodes of the GPU drivers torch's ``cuda`` backend runs on: NVIDIA, AMD ROCm, WSL.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


class DeviceError(ValueError):
    """An unknown or absent device, or an unknown dtype name (one-line message)."""


def gpu_driver_present() -> bool:
    """Whether this machine has a GPU driver that torch's ``cuda`` backend could use: an NVIDIA,
    ROCm or WSL device node, ``/proc/driver/nvidia``, or a loadable ``libcuda``. False means
    ``torch.cuda.is_available()`` is certainly False (torch needs one of them), found without
    importing torch; True means ask torch."""
    if any(os.path.exists(node) for node in GPU_DEVICE_NODES) or os.path.exists("/proc/driver/nvidia"):
        return True
    return ctypes.util.find_library("cuda") is not None


def resolve_device(name: str) -> "torch.device":
    """``"auto"`` -> ``cuda`` if available else ``cpu``; anything else is parsed by torch
    (``cpu``, ``cuda``, ``cuda:1``, ``mps``). Raises DeviceError (one line)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {name}: not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available on this machine")
    return device


def runs_on_cpu(name: str) -> bool:
    """True when ``--device name`` certainly means the CPU, decided without torch: ``cpu``, or
    ``auto`` on a machine without a GPU driver (:func:`gpu_driver_present`)."""
    return name == "cpu" or (name == "auto" and not gpu_driver_present())


def dtype_name(name: str) -> str:
    """fp32/bf16/fp16 (or float32/bfloat16/float16) -> the short name (``"fp32"``, ...).
    Raises DeviceError for anything else."""
    if name not in DTYPE_ALIASES:
        raise DeviceError(f"--dtype {name}: unknown dtype (use auto, fp32, bf16 or fp16)")
    return DTYPE_ALIASES[name]


def named_dtype(name: str) -> "torch.dtype":
    """fp32/bf16/fp16 (or float32/bfloat16/float16) -> the torch dtype. Raises DeviceError."""
    import torch

    return getattr(torch, _TORCH_NAMES[dtype_name(name)])


def dtype_label(dtype: "torch.dtype") -> str:
    """The short name of a torch dtype (``torch.bfloat16`` -> ``"bf16"``); other dtypes as
    ``str(dtype)``."""
    text = str(dtype).replace("torch.", "")
    return DTYPE_ALIASES.get(text, str(dtype))
