"""Device and dtype resolution for ``--device`` / ``--dtype``.

``auto`` device: CUDA when available, else CPU. ``auto`` dtype: bfloat16 on CUDA devices that
support it (float16 on older ones); on a CPU, float32 for a checkpoint stored in float32 (as
transformers' own ``dtype="auto"`` keeps it: a tiny or converted checkpoint then gives the model's
own numbers), else bfloat16 where the CPU's flags advertise native bf16 matrix instructions
(``amx_bf16`` or ``avx512_bf16`` in /proc/cpuinfo), float32 otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, FrozenSet, Optional

from aot_cli import devices
from aot_cli.devices import dtype_label  # noqa: F401  (re-exported: torch dtype -> "fp32"/"bf16"/"fp16")
from aot_cli.models.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def resolve_device(name: str) -> "torch.device":
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


def checkpoint_dtype(config: Any) -> Optional[str]:
    """The dtype a checkpoint's config records its weights in (``dtype``, else the older
    ``torch_dtype``; a config.json dict or a transformers config), as ``"fp32"``/``"bf16"``/
    ``"fp16"``; None when it records none or something else."""
    for key in ("dtype", "torch_dtype"):
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if value is None:
            continue
        name = str(value).replace("torch.", "")
        try:
            return devices.dtype_name(name)
        except devices.DeviceError:
            return None
    return None


def auto_dtype_name(device_type: str, stored: Optional[str] = None) -> str:
    """What ``--dtype auto`` means on a device of type ``device_type`` for a checkpoint stored in
    ``stored`` (:func:`checkpoint_dtype`; None: not recorded): ``"bf16"`` on CUDA (``"fp16"``
    without bf16 support; torch is asked); on a CPU ``"fp32"`` for a float32 checkpoint, else
    ``"bf16"`` on CPUs with fast bf16, else ``"fp32"``."""
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if stored == "fp32":
        return "fp32"
    return "bf16" if device_type == "cpu" and cpu_has_fast_bf16() else "fp32"


def _dtype_name(name: str, device_type: str, stored: Optional[str] = None) -> str:
    try:
        return auto_dtype_name(device_type, stored) if name == "auto" else devices.dtype_name(name)
    except devices.DeviceError as e:
        raise ModelLoadError(str(e)) from None


def resolve_dtype(name: str, device: "torch.device", stored: Optional[str] = None) -> "torch.dtype":
    """``"auto"`` -> :func:`auto_dtype_name` for ``device`` and a checkpoint stored in ``stored``
    (:func:`checkpoint_dtype`); otherwise one of fp32/bf16/fp16 (or float32/bfloat16/float16).
    Raises ModelLoadError (one line)."""
    return devices.named_dtype(_dtype_name(name, device.type, stored))


def resolved_dtype_name(dtype: str, device: str, stored: Optional[str] = None) -> str:
    """The short name (``"fp32"``, ``"bf16"``, ``"fp16"``) of the dtype ``--dtype dtype`` resolves
    to on ``--device device`` for a checkpoint stored in ``stored``, as :func:`resolve_dtype`
    decides it. Without importing torch when the device is certainly the CPU
    (:func:`aot_cli.devices.runs_on_cpu`); otherwise the device is resolved (and checked) by torch.
    Raises ModelLoadError (one line)."""
    device_type = "cpu" if devices.runs_on_cpu(device) else resolve_device(device).type
    return _dtype_name(dtype, device_type, stored)
