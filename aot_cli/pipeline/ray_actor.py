"""The model worker of `aot compress --engine ray`: :class:`VideoActor`, a Ray actor that loads the
model once, owns one index part of the cache and runs the local engine's per-video step
(:class:`~.batch.VideoStep`) on the chunks the driver (:mod:`.ray_engine`) sends it, decoding in its
own processes or in Ray tasks (:mod:`.ray_decode`)."""
from __future__ import annotations

import copy
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import ray

from .inputs import VideoInput
from .ray_decode import TaskDecoder
from .resume import Event, Summary

#: Seconds between checks for a stop request (actor) or a signal (driver) while waiting.
POLL_S = 0.25
#: Seconds an actor waits for its part while another process holds it (a killed run's actor ending).
PART_WAIT_S = 10.0


@dataclass
class ActorSpec:
    """What an actor needs: the output, its part, the checked settings, the model's resolved
    source, the fingerprint, where decoding runs (``decode``: "actor" or "tasks"), how many
    decode processes (or tasks ahead) it uses, the command's working directory ``cwd``
    (relative inputs and ``-o`` are relative to it, on every node) and the torch ``threads`` it
    uses (its share of the node's CPUs, as the local engine uses all of them; Ray would otherwise
    leave an actor one thread)."""

    output: Path
    part: str
    settings: object  # RunSettings
    model_source: object
    fingerprint: str
    decode: str
    decode_workers: int
    cwd: str = ""
    threads: int = 0


@dataclass
class Report:
    """An actor's reply: the ``events`` of videos settled since its last reply, its cumulative
    ``summary``, its ``instance`` (new after a restart) and, when it cannot go on, ``error``."""

    events: List[Event]
    summary: Summary
    instance: str
    error: Optional[str] = None


class _Stopped(Exception):
    """The driver asked the actor to stop (raised inside the step's wait for decoded videos)."""


class _Stoppable:
    """A decode source that ends the step early once ``stop`` is set: the group being run
    finishes, what is not decoded yet stays undone (the next run does it)."""

    def __init__(self, source, stop: threading.Event) -> None:
        self.source, self.stop = source, stop

    def submit(self, jobs) -> None:
        self.source.submit(jobs)

    def pending(self) -> int:
        return 0 if self.stop.is_set() else self.source.pending()

    def ready(self) -> bool:
        return not self.stop.is_set() and self.source.ready()

    def wait(self, seconds: Optional[float]) -> bool:
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if self.stop.is_set():
                raise _Stopped()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if self.source.wait(POLL_S if left is None else min(POLL_S, left)):
                return True

    def next(self):
        if self.stop.is_set():
            raise _Stopped()
        return self.source.next()


class VideoActor:
    """One model worker (a Ray actor): loads the model once, writes its own part of the cache,
    runs :class:`~.batch.VideoStep` on the chunks it is sent. Methods return :class:`Report` s;
    errors that end the run (the model cannot load, the part is in use, the output cannot be
    written) come back as ``Report.error``, one line."""

    def __init__(self, spec: ActorSpec) -> None:
        self.spec = spec
        self.instance = uuid.uuid4().hex
        self.summary = Summary()
        self.events: List[Event] = []
        self.step = None
        self.source = None
        self.stop_event = threading.Event()

    def _report(self, error: Optional[str] = None) -> Report:
        events = list(self.events)
        self.events.clear()  # the step appends to this very list
        return Report(events, copy.deepcopy(self.summary), self.instance, error)

    def _ready(self) -> None:
        """Load the model, take the part, start decoding (once per actor process)."""
        if self.step is not None:
            return
        from .batch import VideoStep
        from .cli_support import load_checked

        spec = self.spec
        settings = spec.settings
        enter_directory(spec.cwd, Path(spec.output))
        if spec.threads > 0:
            import torch

            torch.set_num_threads(spec.threads)
        adapter = load_checked(settings, spec.model_source)
        self.summary.model_loaded = True
        step = VideoStep.for_part(adapter, settings.cfg, spec.fingerprint, Path(spec.output), spec.part,
                                  settings.flush_every, self.summary, self.events.append)
        _open_part(step)
        if spec.decode == "tasks":
            source = TaskDecoder(spec.decode_workers, settings.cfg.decode.timeout, spec.cwd)
        else:
            from .workers import DecodePool

            source = DecodePool(spec.decode_workers, timeout=settings.cfg.decode.timeout)
        source.start()
        self.step, self.source = step, source

    def _guarded(self, work: Callable[[], None]) -> Report:
        from ..cache.errors import CacheError
        from ..models.errors import ModelLoadError
        from .settings import UsageError
        from .workers import DecodeWorkerError

        from ..cache import PartInUseError

        try:
            work()
        except _Stopped:
            pass
        except PartInUseError as exc:  # the local engine's advice (rank flags) does not apply here
            where = str(exc).split(" (aot compress: ", 1)[0]
            return self._report(f"{where} (another aot compress --engine ray writes this cache: wait for it to "
                                "finish)")
        except (UsageError, CacheError, ModelLoadError, DecodeWorkerError) as exc:
            return self._report(str(exc))
        return self._report()

    def open(self) -> Report:
        """Load the model and take the part now (so the run stops before any work when one
        actor cannot)."""
        return self._guarded(self._ready)

    def process(self, batch: List[Tuple[VideoInput, Optional[str]]],
                failures: Sequence[Tuple[VideoInput, str, str]] = ()) -> Report:
        """Record ``failures`` as (input, status, error), then run the step on ``batch``, a list
        of (input, known content hash or None)."""
        def work() -> None:
            self._ready()
            for item, status, error in failures:
                self.step.fail(item, status, error)
            if batch and not self.stop_event.is_set():
                self.step.run([item for item, _ in batch], [sha for _, sha in batch],
                              _Stoppable(self.source, self.stop_event))
            self.step.tick()
        return self._guarded(work)

    def flush(self) -> Report:
        """Commit what waits for its commit."""
        return self._guarded(lambda: self.step.flush() if self.step is not None else None)

    def close(self) -> Report:
        """Commit what waits, release the part, stop decoding."""
        def work() -> None:
            step, source, self.step, self.source = self.step, self.source, None, None
            try:
                if source is not None:
                    source.close()
            finally:
                if step is not None:
                    step.close()
        return self._guarded(work)

    @ray.method(concurrency_group="control")
    def stop(self) -> None:
        """End the running chunk after its current group (called while it runs)."""
        self.stop_event.set()


def _open_part(step, wait_s: float = PART_WAIT_S) -> None:
    """Take the step's part; while another process holds it, try again for ``wait_s`` seconds
    (the actor of a run killed a moment ago may still be ending), then PartInUseError."""
    from ..cache import PartInUseError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            step.open()
            return
        except PartInUseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def enter_directory(cwd: str, output: Path) -> None:
    """Work in the command's directory ``cwd`` (Ray starts workers elsewhere), so relative
    inputs and ``-o`` mean what they mean to the command. A node without that directory can
    still work with absolute paths; a relative ``-o`` there is refused (CacheError)."""
    from ..cache.errors import CacheError

    if not cwd:
        return
    if os.path.isdir(cwd):
        os.chdir(cwd)
    elif not output.is_absolute():
        import socket

        raise CacheError(f"-o {output}: a relative path, and the command's working directory {cwd} does not exist "
                         f"on Ray node {socket.gethostname()}; give absolute paths on a file system every node shares")
