"""The ray engine of `aot compress` (``--engine ray``): the same per-video step as the local
engine (:class:`~.batch.VideoStep`), scheduled over Ray actors.

Shape (docs/cluster.md says why actors and not Ray Data):

- The command (the driver) checks everything and plans the resume exactly as the local engine
  does, then starts a private local Ray (:mod:`.ray_local`; never outlives the command) or joins
  ``--ray-address``.
- It starts ``--ray-actors`` :class:`VideoActor` s. Each loads the model once, keeps it, and owns
  one index part of the cache (``ray-actor00003``: its own shards and index file, locked while
  it writes, swept of a killed writer's leftovers when opened, exactly like a rank's part).
  Decoding runs where ``--ray-decode`` says: inside the actor, in its own ``--decode-workers``
  processes (:class:`~.workers.DecodePool`, hard timeout and crash isolation as in the local
  engine), or in Ray CPU tasks (:class:`TaskDecoder`) that decode straight to the tower's size,
  so no full-resolution frame crosses the object store.
- The driver hands out small chunks of videos, one chunk in flight per actor, to whichever actor
  is free (dynamic load balancing: an actor that draws long videos simply takes fewer). Each
  reply carries the events of the videos the actor committed or failed (an "ok" only once
  committed) and its counts; the driver prints progress and the summary as the local engine does.
- A lost actor (its process or node died) costs the videos it had not committed: the driver reads
  the cache, counts what the lost actor did commit, and hands the rest out again, one video per
  chunk, at most :data:`MAX_ATTEMPTS` times (then the video is recorded as ``crashed``). Ray
  restarts the actor (:data:`MAX_RESTARTS`), which reopens its part. A video is committed at most
  once: it is handed out again only when the cache shows it was not committed, and only after the
  actor that had it is gone.
- SIGINT / SIGTERM / SIGHUP: recorded while the driver waits on Ray and acted on between calls;
  actors stop after the group they are running, commit what they finished, and the command exits
  130 / 143 / 129 as the local engine does.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import ray

from .inputs import VideoInput
from .resume import Event, ResumePlan, Summary, cached_row, existing_cache, report_skipped

#: Times a video is handed out when the actors holding it die (then it is recorded as crashed).
MAX_ATTEMPTS = 3
#: Times Ray restarts one actor whose process died.
MAX_RESTARTS = 3
#: Largest chunk of videos sent to an actor in one call.
CHUNK_MAX = 8
#: Seconds the driver waits for actors to commit and stop after SIGINT / SIGTERM, per phase.
STOP_WAIT_S = 15.0
#: Seconds between the driver's checks for signals while it waits on actors.
POLL_S = 0.25
#: Seconds an actor waits for its part while another process holds it (a killed run's actor ending).
PART_WAIT_S = 10.0
#: Prefix of the actors' index parts (``ray-actor00000``).
PART_PREFIX = "ray-actor"


class RayEngineError(RuntimeError):
    """The ray engine cannot go on (an actor cannot load the model or write its part, every actor
    died, Ray cannot start): one line, exit 2."""


def part_name(slot: int) -> str:
    """The index part of actor ``slot``."""
    return f"{PART_PREFIX}{slot:05d}"


# ----------------------------------------------------------------------------- the actor

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


# ----------------------------------------------------------------------------- decode tasks

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
            outcome, frames = DecodeOutcome("crashed", None, None, f"{path}: the decode task died ({_one_line(exc)})",
                                            time.monotonic() - self._sent[index]), None
        self._sent.pop(index)
        if frames is not None:  # the object store's copy is read-only
            outcome.decoded = replace(outcome.decoded, frames=torch.from_numpy(np.array(frames)))
        self._next_return += 1
        self._dispatch()
        return outcome


# ----------------------------------------------------------------------------- the driver

@dataclass
class _Slot:
    """The driver's view of one actor: its handle, the chunk in flight, the videos it was given
    and has not settled yet (``held``), the instance that last answered, its deaths."""

    index: int
    actor: object
    ref: Optional[object] = None
    chunk: List[int] = field(default_factory=list)
    held: Set[int] = field(default_factory=set)
    instance: Optional[str] = None
    deaths: int = 0
    alive: bool = True
    flushed: bool = False  # asked to commit since its last chunk


class _OwnStdout:
    """``sys.stdout`` while the driver is connected to Ray: what this thread writes (the
    ``--jsonl`` lines) goes to stdout; what Ray's background threads print there (its messages
    about dead workers) goes to stderr, so stdout stays one JSON object per line."""

    def __init__(self, out, err) -> None:
        self._out, self._err, self._owner = out, err, threading.current_thread()

    def _sink(self):
        return self._out if threading.current_thread() is self._owner else self._err

    def write(self, text: str) -> int:
        return self._sink().write(text)

    def flush(self) -> None:
        self._sink().flush()

    def __getattr__(self, name: str):
        return getattr(self._out, name)


@contextmanager
def ray_session(engine, num_cpus: int) -> Iterator[Optional[object]]:
    """Connected to Ray for the run: ``engine.ray_address``'s cluster (left running), else a
    private local Ray (:class:`~.ray_local.PrivateRay`, ended on exit, whatever ends the run).
    Yields the private Ray (None when joining a cluster). RayEngineError when it fails."""
    from .ray_local import PrivateRay, RayStartError

    private = None
    handlers = _signal_handlers()
    stdout = sys.stdout
    sys.stdout = _OwnStdout(stdout, sys.stderr)
    try:
        if engine.ray_address is None:
            private = PrivateRay(num_cpus)
            try:
                private.start()
            except RayStartError as exc:
                raise RayEngineError(str(exc)) from None
            outer = os.environ.pop("RAY_ADDRESS", None)  # "auto" would prefer it to the private Ray
            try:
                ray.init(address="auto", _temp_dir=private.temp_dir, log_to_driver=False, logging_level=logging.ERROR)
            finally:
                if outer is not None:
                    os.environ["RAY_ADDRESS"] = outer
        else:
            try:
                ray.init(address=engine.ray_address, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                text = " ".join(str(exc).split())[:300]
                raise RayEngineError(f"--ray-address {engine.ray_address}: cannot join the Ray cluster ({text})") \
                    from None
        _restore(handlers)  # Ray's core worker replaces them (its SIGTERM handler aborts the process)
        yield private
    finally:
        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            sys.stdout = stdout
            if private is not None:
                private.stop()


class _Signals:
    """SIGINT, SIGTERM and SIGHUP while the driver runs: recorded by the handler and raised by
    :meth:`check` between Ray calls (an exception raised by a handler inside Ray's compiled calls
    comes out as a SystemError), as KeyboardInterrupt or the command's ``Interrupted``. Once one
    was raised, later ones are ignored while the run stops (the stop's waits are bounded)."""

    WANTED = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.raised = False
        self.previous: Dict[int, object] = {}

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.WANTED:
                self.previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        _restore(self.previous)

    def _record(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum

    def check(self) -> None:
        if self.received is None or self.raised:
            return
        self.raised = True
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt
        from .cli_support import Interrupted

        raise Interrupted(self.received)


def _signal_handlers() -> Dict[int, object]:
    """The Python handlers of the signals that end a run (SIGINT, SIGTERM, SIGHUP), to put back
    after ``ray.init`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    wanted = [signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)]
    return {s: signal.getsignal(s) for s in wanted if s is not None and signal.getsignal(s) is not None}


def _restore(handlers: Dict[int, object]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def plan_actors(engine, device: str, resources: Dict[str, float], nodes: int, videos: int) -> Tuple[int, float]:
    """(actors, GPUs per actor): ``--ray-actors`` or one per GPU (x ``--ray-actors-per-gpu``),
    one per node without GPUs (or with ``--device cpu``); never more actors than videos."""
    gpus = float(resources.get("GPU", 0.0)) if device != "cpu" else 0.0
    per_gpu = 1.0 / engine.ray_actors_per_gpu if gpus >= 1 else 0.0
    count = engine.ray_actors or (int(gpus) * engine.ray_actors_per_gpu if gpus >= 1 else max(1, nodes))
    return max(1, min(count, videos)), per_gpu


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {' '.join(str(cause).split())[:400]}"


class _Driver:
    """The scheduling loop over the actors (see the module docstring)."""

    def __init__(self, items: List[VideoInput], known: List[Optional[str]], output: Path, fingerprint: str,
                 summary: Summary, emit: Callable[[Event], None], slots: List[_Slot], chunk: int,
                 failures: Sequence[Tuple[VideoInput, str, str]], note: Callable[[str], None],
                 check_signals: Callable[[], None] = lambda: None) -> None:
        self.items, self.known, self.output, self.fingerprint = items, known, output, fingerprint
        self.summary, self.emit, self.slots, self.chunk = summary, emit, slots, max(1, chunk)
        self.note, self.check_signals = note, check_signals
        self.queue: deque = deque()
        self.solo: Set[int] = set()  # videos handed out again: one per chunk
        self.attempts: Dict[int, int] = {}
        self.to_record: List[Tuple[VideoInput, str, str]] = list(failures)
        self.by_id = {item.video_id: i for i, item in enumerate(items)}
        self.base = Summary()  # what the driver settled itself
        self.snapshots: Dict[str, Summary] = {}

    # -- counts and events -------------------------------------------------------------------
    def _merge(self) -> None:
        """The run's summary: the driver's own counts plus every actor instance's last counts
        (an instance that died keeps the counts it reported)."""
        s, parts = self.summary, [self.base, *self.snapshots.values()]
        for name in ("done", "skipped", "failed", "tokens", "bytes", "frames", "tower_calls"):
            setattr(s, name, sum(getattr(p, name) for p in parts))
        s.model_loaded = any(p.model_loaded for p in parts)
        s.failures = [f for p in parts for f in p.failures]
        s.stage_seconds = {}
        for p in parts:
            for name, seconds in p.stage_seconds.items():
                s.stage(name, seconds)

    def _take(self, slot: _Slot, report: Report) -> None:
        if slot.instance is not None and report.instance != slot.instance:
            self._lost(slot.held, f"the actor of part {part_name(slot.index)} restarted")  # died between calls
            slot.held = set()
        slot.instance = report.instance
        self.snapshots[report.instance] = report.summary
        for event in report.events:
            index = self.by_id.get(str(event.get("id")))
            if index is not None:
                slot.held.discard(index)
            self.emit(event)
        self._merge()
        if report.error:
            raise RayEngineError(report.error)

    def _lost(self, indices: Set[int], why: str) -> int:
        """Videos whose actor died before it reported them: count what the cache shows committed,
        hand the rest out again (one per chunk), or record it as crashed after MAX_ATTEMPTS.
        Returns how many were not committed."""
        if not indices:
            return 0
        uncommitted = 0
        existing = existing_cache(self.output)
        try:
            for i in sorted(indices):
                item = self.items[i]
                row = cached_row(existing, item.video_id, self.fingerprint)
                if row is not None and (self.known[i] is None or row.get("sha256") != self.known[i]):
                    self._committed_by_lost(item, row)
                    continue
                uncommitted += 1
                self.attempts[i] = self.attempts.get(i, 0) + 1
                if self.attempts[i] >= MAX_ATTEMPTS:
                    self.to_record.append((item, "crashed", f"{item.path}: the Ray actor died while computing it "
                                                            f"{self.attempts[i]} times ({why})"))
                else:
                    self.queue.appendleft(i)
                    self.solo.add(i)
        finally:
            if existing is not None:
                existing.close()
        return uncommitted

    def _committed_by_lost(self, item: VideoInput, row: dict) -> None:
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        counts = meta.get("counts") if isinstance(meta.get("counts"), dict) else {}
        tokens, frames = int(counts.get("achieved") or 0), int(counts.get("frames") or 0)
        self.base.done += 1
        self.base.tokens += tokens
        self.base.frames += frames
        self._merge()
        self.emit({"id": item.video_id, "path": str(item.path), "status": "ok", "tokens": tokens,
                   "planned": counts.get("planned"), "frames": frames,
                   "ratio": round(float(counts.get("ratio") or 0), 5),
                   "uncompressed": counts.get("uncompressed_tokens"), "output": str(self.output)})

    def _died(self, slot: _Slot, exc: BaseException) -> None:
        slot.ref, chunk, slot.chunk, slot.flushed = None, slot.chunk, [], False
        lost, slot.held, slot.instance = set(slot.held) | set(chunk), set(), None
        slot.deaths += 1
        if slot.deaths > MAX_RESTARTS:
            slot.alive = False
        uncommitted = self._lost(lost, _one_line(exc))
        self.note(f"the Ray actor of part {part_name(slot.index)} was lost ({_one_line(exc)[:200]}); "
                  f"{uncommitted} of its videos were not committed and are handed out again"
                  + ("" if slot.alive else "; it is not restarted again"))

    # -- the loop ----------------------------------------------------------------------------
    def _next_chunk(self) -> List[int]:
        if not self.queue:
            return []
        first = self.queue.popleft()
        chunk = [first]
        if first in self.solo:
            return chunk
        while self.queue and len(chunk) < self.chunk and self.queue[0] not in self.solo:
            chunk.append(self.queue.popleft())
        return chunk

    def _send(self) -> None:
        """A chunk (and the failures to record) to every idle actor; when nothing is left to hand
        out, a commit to each idle actor still holding videos (now, not when the others finish)."""
        for slot in self.slots:
            if not slot.alive or slot.ref is not None:
                continue
            if self.queue or self.to_record:
                chunk = self._next_chunk()
                failures, self.to_record = self.to_record, []
                slot.chunk, slot.flushed = chunk, False
                slot.held |= set(chunk)
                slot.ref = slot.actor.process.remote([(self.items[i], self.known[i]) for i in chunk], failures)
            elif slot.held and not slot.flushed:
                slot.ref, slot.chunk, slot.flushed = slot.actor.flush.remote(), [], True

    def _busy(self) -> List[_Slot]:
        return [s for s in self.slots if s.ref is not None]

    def _collect(self, timeout: float) -> None:
        self.check_signals()
        busy = self._busy()
        if not busy:
            return
        done, _ = ray.wait([s.ref for s in busy], num_returns=1, timeout=timeout)
        for slot in busy:
            if slot.ref not in done:
                continue
            try:
                report = ray.get(slot.ref)
            except ray.exceptions.RayActorError as exc:
                self._died(slot, exc)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise RayEngineError(f"the actor of part {part_name(slot.index)} failed: {_one_line(exc)}") from None
            slot.ref, slot.chunk = None, []
            self._take(slot, report)

    def run(self, todo: List[int]) -> None:
        self.queue.extend(todo)
        while True:
            self.check_signals()
            if not any(s.alive for s in self.slots):
                raise RayEngineError("every Ray actor died; rerun the same command to resume (see docs/cluster.md)")
            self._send()
            if self._busy():
                self._collect(POLL_S)
                continue
            if self.queue or self.to_record:
                continue
            # all idle, all committed: a video an actor still holds after its commit (there should
            # be none) is handed out again rather than waited for
            held = [s for s in self.slots if s.alive and s.held]
            if not held:
                return
            for slot in held:
                self._lost(slot.held, f"not settled by the actor of part {part_name(slot.index)}")
                slot.held = set()

    def stop(self) -> None:
        """After SIGINT / SIGTERM: let every actor end its current group and commit (bounded
        waits; what does not answer in time is left to the next run)."""
        for slot in self.slots:
            if slot.alive:
                slot.actor.stop.remote()
        self._drain(STOP_WAIT_S)
        for slot in self.slots:
            if slot.alive:
                slot.ref, slot.chunk = slot.actor.close.remote(), []
        self._drain(STOP_WAIT_S)

    def close(self) -> None:
        for slot in self.slots:
            if slot.alive:
                slot.ref, slot.chunk = slot.actor.close.remote(), []
        self._drain(STOP_WAIT_S * 4)

    def _drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._busy() and time.monotonic() < deadline:
            try:
                self._collect(POLL_S)
            except RayEngineError:
                pass
        for slot in self._busy():
            slot.ref = None


def run_ray(items: List[VideoInput], output: Path, settings, *, fingerprint: str, model_source, resume: ResumePlan,
            failures: Sequence[Tuple[VideoInput, str, str]] = (), summary: Optional[Summary] = None,
            emit: Optional[Callable[[Event], None]] = None, note: Optional[Callable[[str], None]] = None) -> Summary:
    """Compress ``items`` into the cache directory ``output`` on Ray (see the module docstring):
    ``settings`` as checked by :func:`~.settings.build_settings` (``settings.engine`` says where
    and how), ``resume`` the plan made with ``fingerprint``, ``failures`` inputs found unusable
    before the run (recorded like decode failures). ``summary`` is filled in place (also when the
    run is interrupted); ``emit`` gets one event per video as in :func:`~.batch.run_batch`;
    ``note`` one line for people when an actor is lost.
    Raises RayEngineError (one line) when the run cannot go on; KeyboardInterrupt and the
    command's termination exception pass through after the actors committed their work."""
    from .workers import default_workers, usable_cpus

    t_start = time.perf_counter()
    summary = summary if summary is not None else Summary()
    emit = emit or (lambda event: None)
    note = note or (lambda line: None)
    engine = settings.engine
    known, todo = list(resume.known), list(resume.todo)
    try:
        with _Signals() as signals, ray_session(engine, usable_cpus()) as private:
            signals.check()  # a signal while Ray started
            resources = ray.cluster_resources()
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
            count, gpus = plan_actors(engine, settings.cfg.model.device, resources, nodes, len(todo))
            cpus_per_actor = 0 if engine.ray_decode == "tasks" else 1
            if private is not None and count * cpus_per_actor > resources.get("CPU", 0):
                raise RayEngineError(f"--ray-actors {count}: each actor takes a CPU and this machine offers "
                                     f"{int(resources.get('CPU', 0))}; use fewer actors or --ray-decode tasks")
            per_node = max(1, math.ceil(count / max(1, nodes)))  # actors sharing a node's CPUs
            node_cpus = max(1, int(resources.get("CPU", 1)) // max(1, nodes))
            threads = max(1, node_cpus // per_node)
            workers = settings.decode_workers
            if workers is None:  # the local engine's default (this node's CPUs), shared by a node's actors
                workers = default_workers(per_node) if engine.ray_decode == "actor" \
                    else max(1, int(resources.get("CPU", 1)) // count)
            cls = ray.remote(concurrency_groups={"control": 1})(VideoActor)
            slots = []
            for slot in range(count):
                spec = ActorSpec(output=output, part=part_name(slot), settings=settings, model_source=model_source,
                                 fingerprint=fingerprint, decode=engine.ray_decode, decode_workers=workers,
                                 cwd=os.getcwd(), threads=threads)
                actor = cls.options(num_cpus=cpus_per_actor, num_gpus=gpus, max_restarts=MAX_RESTARTS,
                                    max_task_retries=0).remote(spec)
                slots.append(_Slot(slot, actor))
            chunk = max(1, min(CHUNK_MAX, len(todo) // (4 * count)))
            driver = _Driver(items, known, output, fingerprint, summary, emit, slots, chunk, failures, note,
                             signals.check)
            report_skipped(resume, items, driver.base, emit)
            driver._merge()
            try:
                for slot in slots:
                    slot.ref = slot.actor.open.remote()
                while driver._busy():  # every actor loaded the model and holds its part (or the run stops)
                    driver._collect(POLL_S)
                from .batch import _recheck  # what another writer committed before the parts were ours

                todo = _recheck(items, todo, known, output, fingerprint, driver.base, emit)
                driver._merge()
                driver.run(todo)
            except BaseException:
                driver.stop()  # interrupted or failed: the actors commit what they finished
                raise
            driver.close()
    finally:
        summary.seconds = time.perf_counter() - t_start
    return summary
