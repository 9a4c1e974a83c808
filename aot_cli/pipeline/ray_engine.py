"""The ray engine of `aot compress` (``--engine ray``): the same per-video step as the local
engine (:class:`~.batch.VideoStep`), scheduled over Ray actors. This module is the driver's
scheduling loop (:func:`run_ray`); the actor and its per-video work are in :mod:`.ray_actor`, the
decode tasks in :mod:`.ray_decode`, the connection to Ray and signal handling in :mod:`.ray_session`.

Shape (docs/cluster.md says why actors and not Ray Data):

- The command (the driver) checks everything and plans the resume exactly as the local engine
  does, then starts a private local Ray (:mod:`.ray_local`; never outlives the command) or joins
  ``--ray-address``.
- It starts ``--ray-actors`` :class:`~.ray_actor.VideoActor` s. Each loads the model once, keeps it, and owns
  one index part of the cache (``ray-actor00003``: its own shards and index file, locked while
  it writes, swept of a killed writer's leftovers when opened, exactly like a rank's part).
  Decoding runs where ``--ray-decode`` says: inside the actor, in its own ``--decode-workers``
  processes (:class:`~.workers.DecodePool`, hard timeout and crash isolation as in the local
  engine), or in Ray CPU tasks (:class:`~.ray_decode.TaskDecoder`) that decode straight to the tower's size,
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

import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import ray

from .inputs import VideoInput
from .ray_actor import POLL_S, ActorSpec, Report, VideoActor
from .ray_messages import RayMessages
from .ray_session import RayEngineError, RunSignals, error_line, ray_session
from .resume import Event, ResumePlan, Summary, cached_row, existing_cache, report_skipped

#: Times a video is handed out when the actors holding it die (then it is recorded as crashed).
MAX_ATTEMPTS = 3
#: Times Ray restarts one actor whose process died.
MAX_RESTARTS = 3
#: Largest chunk of videos sent to an actor in one call.
CHUNK_MAX = 8
#: Seconds the driver waits for actors to commit and stop after SIGINT / SIGTERM, per phase.
STOP_WAIT_S = 15.0
#: Prefix of the actors' index parts (``ray-actor00000``).
PART_PREFIX = "ray-actor"


def part_name(slot: int) -> str:
    """The index part of actor ``slot``."""
    return f"{PART_PREFIX}{slot:05d}"


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


def plan_actors(engine, device: str, resources: Dict[str, float], nodes: int, videos: int) -> Tuple[int, float]:
    """(actors, GPUs per actor): ``--ray-actors`` or one per GPU (x ``--ray-actors-per-gpu``),
    one per node without GPUs (or with ``--device cpu``); never more actors than videos."""
    gpus = float(resources.get("GPU", 0.0)) if device != "cpu" else 0.0
    per_gpu = 1.0 / engine.ray_actors_per_gpu if gpus >= 1 else 0.0
    count = engine.ray_actors or (int(gpus) * engine.ray_actors_per_gpu if gpus >= 1 else max(1, nodes))
    return max(1, min(count, videos)), per_gpu


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
        uncommitted = self._lost(lost, error_line(exc))
        self.note(f"the Ray actor of part {part_name(slot.index)} was lost ({error_line(exc)[:200]}); "
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
                raise RayEngineError(f"the actor of part {part_name(slot.index)} failed: {error_line(exc)}") from None
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
    ``note`` one line for people when an actor is lost, and each of Ray's own messages as one line
    (:mod:`.ray_messages`; nothing of Ray's reaches stdout or stderr otherwise).
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
        messages = RayMessages(note)
        with RunSignals() as signals, ray_session(engine, usable_cpus(), messages) as private:
            def poll() -> None:  # between Ray calls: Ray's messages as notes, then the signals
                messages.drain()
                signals.check()

            poll()  # a signal while Ray started
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
            driver = _Driver(items, known, output, fingerprint, summary, emit, slots, chunk, failures, note, poll)
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
