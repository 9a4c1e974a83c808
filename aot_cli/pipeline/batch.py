"""Many videos into one cache: resume, per-video failures, decoding ahead in worker processes,
several short videos per tower call, per-rank parts, prompt commits.

Flow of one run (:func:`run_batch`)::

    items --(resume check; when every item is cached already, the files are hashed here and
    nothing else runs: no model, no worker)--> DecodeJobs --DecodePool (worker processes, hard timeout)-->
    outcomes in input order --gather up to batch_frames frames--> one adapter.encode call -->
    split per video --> core.compress --> build_result --> CacheWriter (commit every
    ``flush_every`` seconds, at shard size, at the end and on interrupt) --> one event per video

A video's "ok" event is emitted once it is committed (its shard renamed into place and its index
row fsynced), so a consumer of ``--jsonl`` never sees a video that a crash could still lose.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..cache import CacheError, CacheWriter, PartInUseError, write_single
from ..core import AOTConfig
from .inputs import VideoInput
from .ranks import RankInfo
from .changes import run_settings
from .resume import Event, ResumePlan, Summary, plan_resume, report_skipped
from .run import RunConfig, VideoResult, build_result, config_fingerprint, method_with_side, resolve_method
from .settings import DEFAULT_FLUSH_EVERY  # noqa: F401  (re-exported: seconds, see docs/cluster.md)
from .workers import DecodeJob, DecodeOutcome, DecodePool, decode_target, default_workers, tower_on_cpu

class _Sink:
    """Where finished videos go: a cache directory (one :class:`CacheWriter` part for this rank,
    commits every ``flush_every`` seconds) or one ``.safetensors`` file. Counts into ``summary``
    and emits each video's event once the video is durable."""

    def __init__(self, output: Path, single_file: bool, part: str, shard_size: int, flush_every: float,
                 summary: Summary, emit: Callable[[Event], None], fingerprint: str,
                 progress: Optional[Callable[[Event], None]] = None) -> None:
        self.output = output
        self.single_file = single_file
        self.part = part
        self.shard_size = shard_size
        self.flush_every = max(0.0, float(flush_every))
        self.summary = summary
        self.emit = emit
        self.fingerprint = fingerprint
        self.progress = progress or (lambda event: None)
        self.writer: Optional[CacheWriter] = None
        self._waiting: List[Tuple[Event, int, int]] = []  # (event, tokens, frames) not yet committed
        self._oldest: Optional[float] = None
        self._bytes_before = 0

    def open(self) -> None:
        """Create this run's writer (checks that the output can be written). The part is the
        rank's own name, so a rerun appends to it (and sweeps what a killed run of that part left:
        temporary files and orphan shards). When another live writer holds that part (a second
        `aot compress` on the same output without rank flags, or the same ``--shard-id`` twice),
        :class:`PartInUseError` (a CacheError, one line naming that process): the run stops
        before computing anything instead of redoing the other writer's work."""
        if self.writer is not None or self.single_file:
            return
        try:
            self.writer = CacheWriter(self.output, shard_size=self.shard_size, part=self.part, flush_interval=None)
        except PartInUseError as exc:
            raise PartInUseError(f"{exc} (aot compress: run each concurrent process with its own "
                                 "--num-shards/--shard-id, or under torchrun/srun)", exc.owner) from None

    def add(self, item: VideoInput, res: VideoResult) -> None:
        t0 = time.perf_counter()
        counts = res.meta["counts"]
        event: Event = {"id": item.video_id, "path": str(item.path), "status": "ok", "tokens": counts["achieved"],
                        "planned": counts["planned"], "frames": counts["frames"], "ratio": round(counts["ratio"], 5),
                        "uncompressed": counts["uncompressed_tokens"], "output": str(self.output)}
        self.progress({"id": item.video_id, "path": str(item.path), "status": "finished",
                       "frames": counts["frames"]})
        if self.single_file:
            write_single(self.output, item.video_id, res.tensors, res.meta)
            self.summary.bytes += self.output.stat().st_size
            self._waiting.append((event, int(counts["achieved"]), int(counts["frames"])))
            self._committed()
        else:
            self.open()
            self.writer.add(item.video_id, res.tensors, res.meta)
            self._waiting.append((event, int(counts["achieved"]), int(counts["frames"])))
            if self._oldest is None:
                self._oldest = time.monotonic()
            if self.writer.stats["buffered_videos"] == 0:
                self._committed()
            else:
                self.tick()
        self.summary.stage("write", time.perf_counter() - t0)

    def fail(self, item: VideoInput, status: str, error: str, sha: Optional[str]) -> None:
        self.summary.failed += 1
        self.summary.failures.append({"id": item.video_id, "path": str(item.path), "status": status, "error": error})
        if not self.single_file:
            self.open()
            self.writer.add_failure(item.video_id, item.path, status, error,
                                    meta={"sha256": sha, "config_fingerprint": self.fingerprint,
                                          "extra": item.extra})
        self.emit({"id": item.video_id, "path": str(item.path), "status": status, "error": error})

    def due_in(self) -> Optional[float]:
        """Seconds until the buffered videos must be committed (None: nothing buffered)."""
        if self._oldest is None:
            return None
        return max(0.0, self._oldest + self.flush_every - time.monotonic())

    def tick(self) -> None:
        """Commit when the oldest buffered video has waited ``flush_every`` seconds."""
        due = self.due_in()
        if due is not None and due <= 0.0:
            self.flush()

    def flush(self) -> None:
        if self.writer is not None and self._waiting:
            t0 = time.perf_counter()
            self.writer.flush()
            self.summary.stage("commit", time.perf_counter() - t0)
            self._committed()

    def _committed(self) -> None:
        """Everything waiting is durable now: count it and tell the caller."""
        if self.writer is not None:
            written = self.writer.stats["bytes"]
            self.summary.bytes += written - self._bytes_before
            self._bytes_before = written
        waiting, self._waiting, self._oldest = self._waiting, [], None
        for event, tokens, frames in waiting:
            self.summary.done += 1
            self.summary.tokens += tokens
            self.summary.frames += frames
            self.emit(event)

    def abandon(self) -> None:
        """Release the part before any work was done; a cache this run created, still empty, is
        removed again (:meth:`CacheWriter.abandon`)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.abandon()

    def close(self) -> None:
        """Commit what is buffered and release the part (also when the run is interrupted)."""
        if self.writer is None:
            return
        writer = self.writer
        try:
            self.flush()
        except BaseException:
            self.writer = None
            try:
                writer.close()
            except CacheError:
                pass  # the same write failing again: the first error goes on
            raise
        self.writer = None
        writer.close()


@dataclass
class _Ready:
    """A decoded video waiting for the tower."""

    item: VideoInput
    outcome: DecodeOutcome


def _encode_group(group: List[_Ready], adapter, cfg: RunConfig, summary: Summary) -> List[Tuple[_Ready, object]]:
    """Run the tower once over the frames of every video of ``group`` (per pixel shape: towers
    whose grid follows the frame size get one call per shape) and split the result back.
    Returns (video, (tower output slices, timings)) or (video, exception) per video."""
    score_layers = cfg.model.score_layers or adapter.profile.score_layers
    prepared: List[Tuple[_Ready, torch.Tensor, float]] = []
    results: List[Tuple[_Ready, object]] = []
    for ready in group:
        t0 = time.perf_counter()
        try:
            pixels = adapter.preprocess(ready.outcome.decoded.frames)
        except (RuntimeError, ValueError) as exc:
            results.append((ready, exc))
            continue
        prepared.append((ready, pixels, time.perf_counter() - t0))
    by_shape: Dict[Tuple[int, ...], List[Tuple[_Ready, torch.Tensor, float]]] = {}
    for entry in prepared:
        by_shape.setdefault(tuple(entry[1].shape[1:]), []).append(entry)
    for members in by_shape.values():
        results.extend(_encode_same_shape(members, adapter, score_layers, summary))
    return results


def _encode_same_shape(members, adapter, score_layers, summary: Summary) -> List[Tuple[_Ready, object]]:
    """One encode call over videos whose pixels have the same shape; on failure, one call per
    video so only the video at fault fails."""
    t0 = time.perf_counter()
    try:
        pixels = torch.cat([m[1] for m in members]) if len(members) > 1 else members[0][1]
        out = adapter.encode(pixels, score_layers=score_layers)
    except (RuntimeError, ValueError) as exc:
        if len(members) == 1:
            return [(members[0][0], exc)]
        results = []
        for member in members:
            results.extend(_encode_same_shape([member], adapter, score_layers, summary))
        return results
    tower_s = time.perf_counter() - t0
    summary.tower_calls += 1
    total = sum(m[1].shape[0] for m in members)
    results = []
    start = 0
    per = getattr(adapter, "temporal_patch", 1)  # sampled frames per frame of the method
    for ready, pixels, preprocess_s in members:
        n = pixels.shape[0] // per
        rows = slice(start, start + n)
        part = (out.tokens[rows], out.shallow[rows], out.deep[rows], out.grid,
                {name: value[rows] for name, value in out.side.items()})
        timings = {"preprocess": preprocess_s, "tower": tower_s * pixels.shape[0] / total}
        results.append((ready, (part, timings)))
        start += n
    return results


def _finish_video(ready: _Ready, encoded, adapter, cfg: RunConfig, method: AOTConfig,
                  fingerprint: str) -> VideoResult:
    """The method on one video's tower output, then its cache entry."""
    (tokens, shallow, deep, grid, side), timings = encoded
    t0 = time.perf_counter()
    res, side_rows = method_with_side(tokens, shallow, deep, grid, side, method)
    timings["method"] = time.perf_counter() - t0
    decoded = ready.outcome.decoded
    result = build_result(ready.item.video_id, decoded, adapter, cfg, method, res, timings,
                          ready.item.extra or None, fingerprint=fingerprint, given_path=str(ready.item.path),
                          side=side_rows)
    result.meta["timings_s"]["decode"] = round(ready.outcome.seconds, 4)
    return result


def _process_group(group: List[_Ready], adapter, cfg: RunConfig, method: AOTConfig, fingerprint: str,
                   sink: _Sink, summary: Summary) -> None:
    for ready, encoded in _encode_group(group, adapter, cfg, summary):
        item = ready.item
        if isinstance(encoded, BaseException):
            sink.fail(item, "compress_error", _message(item, encoded), ready.outcome.sha256)
            continue
        try:
            result = _finish_video(ready, encoded, adapter, cfg, method, fingerprint)
        except (RuntimeError, ValueError) as exc:
            sink.fail(item, "compress_error", _message(item, exc), ready.outcome.sha256)
            continue
        for name, seconds in result.timings.items():
            summary.stage(name, seconds)
        sink.add(item, result)


def _message(item: VideoInput, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.startswith(str(item.path)) else f"{item.path}: {text}"


def run_batch(items: List[VideoInput], output: Path, cfg: RunConfig, *, adapter=None,
              rank: RankInfo = RankInfo(0, 1, "single"), overwrite: bool = False, single_file: bool = False,
              prefetch: Optional[int] = None, decode_workers: Optional[int] = None,
              flush_every: float = DEFAULT_FLUSH_EVERY, gather_frames: Optional[int] = None,
              pool: Optional[DecodePool] = None, summary: Optional[Summary] = None,
              on_event: Optional[Callable[[Event], None]] = None, fingerprint: Optional[str] = None,
              model_source=None, failures: Sequence[Tuple[VideoInput, str, str]] = (),
              load_adapter: Optional[Callable[[], object]] = None, resume: Optional[ResumePlan] = None,
              on_progress: Optional[Callable[[Event], None]] = None) -> Summary:
    """Compress ``items`` into ``output`` (a cache directory, or one ``.safetensors`` file when
    ``single_file``) and return the run's :class:`Summary`.

    Videos already cached with the same content hash and configuration fingerprint
    (:func:`~.runconfig.config_fingerprint`; ``fingerprint`` when the caller computed it, else from
    ``cfg`` and the checkpoint, without loading it) are skipped unless ``overwrite``; failed ones
    are tried again; a video cached with another fingerprint stops the run before anything runs
    (:class:`~.resume.ConfigurationChanged`) unless ``overwrite``. When every item is cached
    that way, the files are hashed in this process
    and, if none changed, the run ends there: no model is loaded (``adapter`` None) and no worker
    started (:func:`~.resume.plan_resume`; ``resume``: its plan, when the caller made it already,
    with the same ``fingerprint``). Otherwise files are hashed and decoded by ``decode_workers`` processes (None:
    :func:`~.workers.default_workers` for the tower's device; 0: in this process) with a hard limit of
    ``cfg.decode.timeout`` seconds per video; at most ``prefetch`` videos are read ahead; the
    model (``adapter``, else ``load_adapter()``, else :func:`~aot_cli.models.load_model` of
    ``cfg.model`` at ``model_source``) loads while the workers start, before anything is
    written. Decoded videos that are ready are
    gathered until ``gather_frames`` frames (None: the adapter's ``batch_frames``; 1: one video
    per call) and go through the tower in one call. Finished videos are committed once the oldest
    of them has waited ``flush_every`` seconds (0: after every video), when a shard is full, at
    the end, and when the run is interrupted (any exception, e.g. KeyboardInterrupt: buffered
    videos are committed before it propagates). ``pool``: a :class:`DecodePool` (started or not;
    its workers/timeout are used; it is closed on return). ``summary``: filled in place (so a
    caller sees the counts of an interrupted run). ``failures``: inputs found unusable before the
    run, as (input, status, error), recorded like decode failures. ``on_event`` receives one dict
    per video: ``status`` "ok" (once committed), "skipped", or a failure status ("unreadable",
    "decode_error", "timeout", "crashed", "compress_error") with ``error``. ``on_progress``
    receives ``{"id", "path", "status": "finished", "frames"}`` as soon as a video is computed,
    before it is committed (progress counts finished videos; commits come in batches). Raises
    CacheError when the output cannot be written or the existing output cannot be read."""
    from ..models import load_model
    from ..models.identity import model_identity

    t_start = time.perf_counter()
    summary = summary if summary is not None else Summary()
    emit = on_event or (lambda event: None)
    if pool is None:
        workers = decode_workers
        if workers is None:  # the adapter's device when it is loaded, else the configured one
            workers = default_workers(adapter.device.type == "cpu" if adapter is not None
                                      else tower_on_cpu(cfg.model.device))
        pool = DecodePool(workers, timeout=cfg.decode.timeout, lookahead=prefetch)
    sink: Optional[_Sink] = None
    try:
        if resume is None:
            identity = model_identity(cfg.model, model_source)
            if fingerprint is None:
                fingerprint = config_fingerprint(cfg, identity)
            resume = plan_resume(items, output, fingerprint, overwrite, settings=run_settings(cfg, identity))
        elif fingerprint is None:
            raise ValueError("run_batch: a precomputed resume plan needs the fingerprint it was made with")
        known, todo = list(resume.known), list(resume.todo)
        report_skipped(resume, items, summary, emit)
        sink = _Sink(output, single_file, rank.part, cfg.storage.shard_size,
                     flush_every, summary, emit, fingerprint, on_progress)
        if todo:
            # the part's writer lock before anything runs: a second writer on this part is refused
            # at once, and what another writer committed before we got the lock is not redone
            sink.open()
            if not overwrite and not single_file:
                todo = _recheck(items, todo, known, output, fingerprint, summary, emit, resume.settings)
        for item, status, error in failures:
            sink.fail(item, status, error, None)
        if not todo:
            return summary
        try:
            pool.start()  # the workers start while the model loads
            if adapter is None:
                adapter = load_adapter() if load_adapter is not None else load_model(cfg.model, model_source)
                summary.model_loaded = True
            method = resolve_method(cfg, adapter.profile)
        except BaseException:
            sink.abandon()  # nothing was computed: an output this run created is not left behind
            raise
        step = VideoStep(adapter, cfg, method, fingerprint, sink, summary, emit, gather_frames)
        with pool:
            step.run([items[i] for i in todo], [known[i] for i in todo], pool)
    finally:
        try:
            pool.close()
        finally:
            try:
                if sink is not None:
                    sink.close()
            finally:
                summary.seconds = time.perf_counter() - t_start
    return summary


class VideoStep:
    """The per-video step every engine schedules (the local one in :func:`run_batch`, the Ray
    one in :mod:`.ray_engine`): videos of one list are decoded by ``pool`` (a
    :class:`DecodePool` or anything with its ``submit/pending/ready/wait/next``), gathered
    until ``gather_frames`` frames (None: the adapter's ``batch_frames``), encoded, compressed
    and handed to ``sink`` (committed on its schedule); one event per video goes to ``emit``.
    ``method``: the resolved method (:func:`~.run.resolve_method` of ``cfg`` for the adapter's
    profile)."""

    def __init__(self, adapter, cfg: RunConfig, method: AOTConfig, fingerprint: str, sink: "_Sink",
                 summary: Summary, emit: Callable[[Event], None], gather_frames: Optional[int] = None) -> None:
        self.adapter, self.cfg, self.method, self.fingerprint = adapter, cfg, method, fingerprint
        self.sink, self.summary, self.emit = sink, summary, emit
        if gather_frames is None:
            gather_frames = int(getattr(adapter, "batch_frames", cfg.model.batch_frames))
        self.batch_frames = max(1, int(gather_frames))

    @classmethod
    def for_part(cls, adapter, cfg: RunConfig, fingerprint: str, output: Path, part: str, flush_every: float,
                 summary: Summary, emit: Callable[[Event], None], gather_frames: Optional[int] = None) -> "VideoStep":
        """A step writing into index part ``part`` of the cache directory ``output`` (its writer,
        and the part's lock, are taken by :meth:`open` or the first video)."""
        sink = _Sink(output, False, part, cfg.storage.shard_size, flush_every, summary, emit, fingerprint)
        return cls(adapter, cfg, resolve_method(cfg, adapter.profile), fingerprint, sink, summary, emit,
                   gather_frames)

    def jobs(self, items: Sequence[VideoInput], known: Sequence[Optional[str]]) -> List[DecodeJob]:
        """The decode jobs of ``items`` (``known``: the content hash each is cached under, or None)."""
        profile = self.adapter.profile
        target = decode_target(self.adapter, self.cfg.decode)
        return [DecodeJob(str(item.path), self.cfg.decode, profile.default_frames, sha, target)
                for item, sha in zip(items, known)]

    def run(self, items: List[VideoInput], known: Sequence[Optional[str]], pool) -> None:
        """Decode, encode, compress and hand every one of ``items`` to the sink (or record its
        failure); returns once each has its outcome (some may still wait for their commit)."""
        pool.submit(self.jobs(items, known))
        _drive(items, pool, self.adapter, self.cfg, self.method, self.fingerprint, self.sink, self.summary,
               self.emit, self.batch_frames)

    def fail(self, item: VideoInput, status: str, error: str, sha: Optional[str] = None) -> None:
        """Record ``item`` as failed (index row, ``failures.jsonl``, event)."""
        self.sink.fail(item, status, error, sha)

    def open(self) -> None:
        """Take the part's writer (and its lock) now: PartInUseError when another writer holds it."""
        self.sink.open()

    def flush(self) -> None:
        """Commit what waits (videos whose events are still to come)."""
        self.sink.flush()

    def tick(self) -> None:
        """Commit when the oldest waiting video has waited ``flush_every`` seconds."""
        self.sink.tick()

    def close(self) -> None:
        """Commit what waits and release the part."""
        self.sink.close()


def _recheck(items: List[VideoInput], todo: List[int], known: List[Optional[str]], output: Path, fingerprint: str,
             summary: Summary, emit: Callable[[Event], None], settings: Optional[dict] = None) -> List[int]:
    """``todo`` less what the cache holds now, read again once this run holds its part's lock
    (a writer that finished in the meantime): those videos are settled as skipped (or, when some
    of them are not cached, left to the workers with their ``known`` hash, which skip a file that
    still has it)."""
    pending = [items[i] for i in todo]
    fresh = plan_resume(pending, output, fingerprint, settings=settings)
    for j, i in enumerate(todo):
        if fresh.known[j] is not None:
            known[i] = fresh.known[j]
    report_skipped(fresh, pending, summary, emit)
    return [todo[j] for j in fresh.todo]


def _drive(items: List[VideoInput], pool: DecodePool, adapter, cfg: RunConfig, method: AOTConfig,
           fingerprint: str, sink: _Sink, summary: Summary, emit: Callable[[Event], None],
           batch_frames: int) -> None:
    """The main loop: take outcomes in order, gather decoded videos while more are ready and the
    group has fewer than ``batch_frames`` frames, run each group; commit on time."""
    position = 0
    while pool.pending():
        group: List[_Ready] = []
        frames = 0
        while pool.pending() and (not group or (frames < batch_frames and pool.ready())):
            while not group and not pool.wait(sink.due_in()):
                sink.tick()  # nothing to run yet: commit what waits instead of holding it
            item = items[position]
            outcome = pool.next()
            position += 1
            summary.stage("decode", outcome.seconds)
            if outcome.status == "ok":
                group.append(_Ready(item, outcome))
                frames += int(outcome.decoded.frames.shape[0])
            elif outcome.status == "skipped":
                summary.skipped += 1
                emit({"id": item.video_id, "path": str(item.path), "status": "skipped"})
            else:
                sink.fail(item, outcome.status, outcome.error or f"{item.path}: {outcome.status}", outcome.sha256)
        if group:
            _process_group(group, adapter, cfg, method, fingerprint, sink, summary)
        sink.tick()
