"""Decoding in Ray CPU tasks (``--ray-decode tasks``): :class:`TaskDecoder`, the
:class:`~.workers.DecodePool` interface over :func:`_decode_task`, which decodes one video at the
tower's size on whichever node runs it, so no full-resolution frame crosses the object store."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Dict, Optional

import ray

from .ray_session import error_line

_task_pool = None  # a Ray worker's own decode process (kept between the tasks it runs)


def _decode_task(job, cwd: str, timeout: Optional[float]):
    """Ray task: hash and decode one video at the tower's size, in the command's directory
    ``cwd`` when this node has it. The work runs in a :class:`~.workers.DecodePool` of one process
    that this Ray worker keeps: the same hard ``timeout`` (from the last sign of progress) and
    crash isolation as the local engine. Frames travel as a numpy array."""
    global _task_pool
    from .workers import DecodePool

    if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)
    if _task_pool is None or _task_pool.timeout != (float(timeout) if timeout and timeout > 0 else None):
        if _task_pool is not None:
            _task_pool.close()
        _task_pool = DecodePool(1, timeout=timeout).start()
    _task_pool.submit([job])
    outcome = _task_pool.next()
    frames = None
    if outcome.decoded is not None:
        frames = outcome.decoded.frames.numpy()
        outcome.decoded = replace(outcome.decoded, frames=None)
    return outcome, frames


class TaskDecoder:
    """The :class:`~.workers.DecodePool` interface over Ray CPU tasks (:func:`_decode_task`):
    at most ``ahead`` tasks handed out beyond the outcome being waited for, outcomes in job order.
    A task whose Ray worker dies (twice: Ray retries once) is ``crashed``."""

    def __init__(self, ahead: int, timeout: Optional[float], cwd: str = "") -> None:
        self.ahead = max(1, int(ahead))
        self.timeout = timeout
        self.cwd = cwd
        self._remote = ray.remote(num_cpus=1, max_retries=1)(_decode_task)
        self._jobs: list = []
        self._refs: Dict[int, object] = {}
        self._sent: Dict[int, float] = {}
        self._next_return = 0
        self._next_dispatch = 0

    def start(self) -> "TaskDecoder":
        return self

    def __enter__(self) -> "TaskDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Cancel the tasks not returned yet (their workers are killed)."""
        for ref in self._refs.values():
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass
        self._refs.clear()

    def submit(self, jobs) -> None:
        self._jobs.extend(jobs)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._next_dispatch < len(self._jobs) and self._next_dispatch - self._next_return <= self.ahead:
            index = self._next_dispatch
            self._refs[index] = self._remote.remote(self._jobs[index], self.cwd, self.timeout)
            self._sent[index] = time.monotonic()
            self._next_dispatch += 1

    def pending(self) -> int:
        return len(self._jobs) - self._next_return

    def ready(self) -> bool:
        return bool(self.pending()) and self.wait(0.0)

    def wait(self, seconds: Optional[float]) -> bool:
        """Wait up to ``seconds`` (None: as long as it takes) for the next outcome."""
        if not self.pending():
            return True
        done, _ = ray.wait([self._refs[self._next_return]], timeout=seconds)
        return bool(done)

    def next(self):
        import numpy as np
        import torch

        from .workers import DecodeOutcome

        if not self.pending():
            raise IndexError("no decode job left")
        index = self._next_return
        ref, path = self._refs.pop(index), self._jobs[index].path
        try:
            outcome, frames = ray.get(ref)
        except ray.exceptions.RayError as exc:
            outcome, frames = DecodeOutcome("crashed", None, None, f"{path}: the decode task died ({error_line(exc)})",
                                            time.monotonic() - self._sent[index]), None
        self._sent.pop(index)
        if frames is not None:  # the object store's copy is read-only
            outcome.decoded = replace(outcome.decoded, frames=torch.from_numpy(np.array(frames)))
        self._next_return += 1
        self._dispatch()
        return outcome
