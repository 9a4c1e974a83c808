"""Peak host and device memory of a block of code.

Host: the process's resident-set high-water mark. On Linux the kernel keeps it (``VmHWM`` in
``/proc/self/status``) and resets it when "5" is written to ``/proc/self/clear_refs``, so the peak
of a block is exact and costs nothing. Where that reset is not allowed, a thread samples
``VmRSS`` every millisecond (short spikes between samples can be missed; ``method`` says which
was used). Before the block, free heap memory is handed back to the system (``malloc_trim``), so
the start level is the live memory and the block's own allocations show. With ``tree=True`` a
thread also samples the summed RSS of this process and all its descendants (decode worker
processes) every 10 ms. Device: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (memory
handed out by torch's allocator, not what the driver reserves).
"""
from __future__ import annotations

import ctypes
import gc
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> Optional[int]:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes, or None."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss() -> Optional[int]:
    """Resident memory of this process now, bytes (None where /proc is absent)."""
    return _status_kib("VmRSS")


def _rss_of(pid: int) -> int:
    """VmRSS of process ``pid`` in bytes (0 when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (children, their children, ...), from ``/proc/<pid>/task/*/children``."""
    found: List[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def tree_rss(pid: Optional[int] = None) -> int:
    """Summed RSS of process ``pid`` (default: this one) and all its descendants, bytes."""
    pid = os.getpid() if pid is None else pid
    return _rss_of(pid) + sum(_rss_of(child) for child in descendants(pid))


def release_free_heap() -> None:
    """Collect garbage and return free C heap to the system (glibc ``malloc_trim``; a no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_host_peak() -> bool:
    """Reset the kernel's resident high-water mark to the current RSS; False when not allowed."""
    try:
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


@dataclass
class MemoryPeak:
    """Memory while a block ran. ``host_start`` / ``host_peak``: RSS before and the highest RSS
    during the block (bytes); ``device_start`` / ``device_peak``: torch CUDA allocator bytes
    (None off CUDA). ``host_working`` / ``device_working``: peak minus start, the memory the
    block itself needed. ``method``: "vmhwm", "sampled" or "unavailable". ``tree_peak``: highest
sampled RSS of this process plus its descendants (None unless asked for)."""

    host_start: Optional[int] = None
    host_peak: Optional[int] = None
    device_start: Optional[int] = None
    device_peak: Optional[int] = None
    method: str = "unavailable"
    tree_peak: Optional[int] = None

    @property
    def host_working(self) -> Optional[int]:
        if self.host_peak is None or self.host_start is None:
            return None
        return max(0, self.host_peak - self.host_start)

    @property
    def device_working(self) -> Optional[int]:
        if self.device_peak is None or self.device_start is None:
            return None
        return max(0, self.device_peak - self.device_start)

    @property
    def working(self) -> int:
        """The block's own memory where it matters most: device bytes on CUDA, else host bytes."""
        if self.device_working is not None:
            return self.device_working
        return self.host_working or 0

    def to_dict(self) -> dict:
        return {"host_start_bytes": self.host_start, "host_peak_bytes": self.host_peak,
                "host_working_bytes": self.host_working, "device_start_bytes": self.device_start,
                "device_peak_bytes": self.device_peak, "device_working_bytes": self.device_working,
                "tree_peak_bytes": self.tree_peak, "method": self.method}


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.result`` is a :class:`MemoryPeak`."""

    def __init__(self, device: torch.device, tree: bool = False, sample_interval: float = 0.001,
                 tree_interval: float = 0.01) -> None:
        self.device = torch.device(device)
        self.tree = tree
        self.sample_interval = sample_interval
        self.tree_interval = tree_interval
        self.result = MemoryPeak()
        self._stop = threading.Event()
        self._sampler: Optional[threading.Thread] = None
        self._tree_sampler: Optional[threading.Thread] = None
        self._sampled_peak = 0
        self._tree_peak = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.result.device_start = int(torch.cuda.memory_allocated(self.device))
        release_free_heap()
        start = current_rss()
        self.result.host_start = start
        if start is None:
            return self
        if reset_host_peak():
            self.result.method = "vmhwm"
        else:
            self.result.method = "sampled"
            self._sampled_peak = start
            self._sampler = threading.Thread(target=self._sample, name="aot-bench-rss", daemon=True)
            self._sampler.start()
        if self.tree:
            self._tree_peak = tree_rss()
            self._tree_sampler = threading.Thread(target=self._sample_tree, name="aot-bench-tree", daemon=True)
            self._tree_sampler.start()
        return self

    def _sample_tree(self) -> None:
        while not self._stop.wait(self.tree_interval):
            self._tree_peak = max(self._tree_peak, tree_rss())

    def _sample(self) -> None:
        while not self._stop.wait(self.sample_interval):
            rss = current_rss()
            if rss is not None and rss > self._sampled_peak:
                self._sampled_peak = rss

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.result.device_peak = int(torch.cuda.max_memory_allocated(self.device))
        self._stop.set()
        for thread in (self._sampler, self._tree_sampler):
            if thread is not None:
                thread.join()
        if self.result.method == "vmhwm":
            self.result.host_peak = _status_kib("VmHWM")
        elif self.result.method == "sampled":
            self.result.host_peak = max(self._sampled_peak, current_rss() or 0)
        if self.tree:
            self.result.tree_peak = max(self._tree_peak, self.result.host_peak or 0)
