"""What a benchmark ran on: CPU, cores, memory, GPU, library versions, load at the time."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def total_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> Optional[int]:
    """Physical memory in bytes (``MemTotal``), or None where unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the logical core count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> Optional[List[float]]:
    """1, 5 and 15 minute load averages (other processes competing for the cores), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def gpus() -> List[Dict[str, Any]]:
    """One entry per visible CUDA device: name, memory in bytes, compute capability."""
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": props.name, "memory_bytes": int(props.total_memory),
                    "capability": f"{props.major}.{props.minor}"})
    return out


def machine_info() -> Dict[str, Any]:
    """JSON-ready description of the machine and software a benchmark runs on."""
    import transformers

    from .. import __version__

    flags = _cpu_flags()
    return {
        "cpu": cpu_model(),
        "cpu_bf16": any(f in flags for f in ("amx_bf16", "avx512_bf16")),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": total_memory_bytes(),
        "gpus": gpus(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "aot": __version__,
    }


def _cpu_flags() -> frozenset:
    from ..models.runtime import cpu_flags

    return cpu_flags()
