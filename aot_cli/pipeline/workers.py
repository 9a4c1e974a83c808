"""Reading videos in worker processes, ahead of the tower, under a hard time limit.

Each job hashes one file (for resuming) and decodes its frames (:func:`aot_cli.video.decode_video`)
in a worker process. The parent hands jobs out, keeps a bounded number of finished ones waiting,
and returns outcomes in job order. The time limit counts from the last sign of progress: while
hashing, the worker reports after every second of reading, and once more when decoding starts,
which then has the whole limit (the decoder's own cooperative check fires first when it can). A
worker that makes no progress within the limit is killed (a decoder stuck inside FFmpeg, or an
``open()`` that never returns, cannot hold the batch) and one that dies (a crash in native code)
is reported; both are replaced and the run goes on.

Frames travel from a worker to the parent as raw bytes on the job's pipe, read straight into the
array that becomes the frame tensor (no pickling of pixel data).

With ``workers=0`` the jobs run in the calling process, one at a time, when their outcome is asked
for: no isolation and only the decoder's own (cooperative) timeout.

Hashing is bounded: a job first checks that the file opens as a video (container header only) and
hashes it only then, so a large file that is not a video (e.g. gigabytes of zeros) is rejected in
a fraction of a second instead of being read in full.

Process model: workers never outlive the run. Each worker watches its pipe to the main process
in a thread: the kernel closes the main process's end the moment it exits, however it exits
(SIGKILL included, and before a parent that is slow to reap it does so), and the worker exits at
once (Linux POLLRDHUP; elsewhere it checks the main process every :data:`PARENT_CHECK_S` seconds).
On Linux a worker also asks the kernel to SIGKILL it when its own parent, the forkserver, exits
(``PR_SET_PDEATHSIG``). A worker leaves SIGINT to the main process (a terminal sends it to the
whole process group) and gives SIGTERM / SIGHUP :data:`TERM_GRACE_S` seconds for the main process
to stop it in order, then exits on its own. :meth:`DecodePool.close` never waits on a stuck
worker: it kills, waits a bounded time, and leaves a process it cannot reap (uninterruptible I/O)
out of multiprocessing's exit-time join.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import multiprocessing
import multiprocessing.process
import os
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..config import DecodeConfig
from ..video import DecodedVideo, VideoDecodeError, decode_video
from ..video.digest import HASH_CHUNK, PROGRESS_EVERY_S  # noqa: F401  (re-exported)
from .resume import hash_file

#: Outcome statuses. "ok": decoded; "skipped": the file's hash equals the job's ``known_sha256``.
#: The others are failures: the file cannot be opened or read ("unreadable"), the decoder rejected
#: it ("decode_error"), it ran past the time limit ("timeout"), the worker died ("crashed").
FAILURE_STATUSES = ("unreadable", "decode_error", "timeout", "crashed")
#: Seconds between a worker's checks that the process that started it is still alive.
PARENT_CHECK_S = 0.5
#: Seconds a worker waits after SIGTERM / SIGHUP for the main process to stop it, then exits.
TERM_GRACE_S = 2.0
#: Seconds :meth:`DecodePool.close` waits for its workers, in all, before it kills them; and
#: after killing, before it gives up on one (a process in uninterruptible I/O cannot be reaped).
CLOSE_WAIT_S = 2.0
KILL_WAIT_S = 1.0
#: Linux prctl option: the signal a process gets when its parent exits.
PR_SET_PDEATHSIG = 1
#: First message of a worker: it started and waits for jobs.
READY = "aot-decode-ready"
#: A worker's sign of progress: its job's time limit starts again (sent while hashing, between
#: reads, and once hashing is done, so reading a large file is not mistaken for a hang).
PROGRESS = "aot-decode-progress"
#: Why a worker that dies before it is ready cannot be a problem of one video.
START_HINT = ("a script that runs batches must guard its top level with `if __name__ == '__main__':` "
              "(worker processes import the main module), or pass decode_workers=0")


class DecodeWorkerError(RuntimeError):
    """The decode worker processes cannot run at all (not a problem of one video)."""


@dataclass(frozen=True)
class DecodeJob:
    """One video to read. ``known_sha256``: skip decoding when the file's sha256 equals it (the
    video is already cached with the same configuration). ``default_frames``: frames sampled when
    ``cfg.frames`` is None (the model profile's). ``target_size``: the size the tower's
    preprocessing resizes frames to, (height, width) or a picklable function of the native
    (height, width) (see :func:`decode_target`); frames are decoded straight to it (None: native)."""

    path: str
    cfg: DecodeConfig
    default_frames: int
    known_sha256: Optional[str] = None
    target_size: Optional[Any] = None


def decode_target(adapter, decode: Optional[DecodeConfig] = None) -> Optional[Callable[[int, int], Tuple[int, int]]]:
    """What the adapter's preprocessing resizes a (height, width) frame to, picklable
    (:meth:`~aot_cli.models.adapter.VisionAdapter.decode_target`), or None when it does not say.
    ``decode``: the run's decode settings; they give the frame count when it is known before
    decoding (``frames``, else the profile's default, unless ``fps`` is set), which the Qwen3-VL /
    Qwen3.5 resize depends on, and the decode size (``decode.size``: "native" gives None; "auto"
    gives None for adapters whose ``native_decode`` is set, the Qwen families, whose processor
    resizes native frames). Objects outside the adapter interface: their ``spec.resized_size``."""
    size = decode.size if decode is not None else "auto"
    if size == "native" or (size == "auto" and getattr(adapter, "native_decode", False)):
        return None
    hook = getattr(adapter, "decode_target", None)
    if not callable(hook):
        return getattr(getattr(adapter, "spec", None), "resized_size", None)
    frames = None
    if decode is not None and decode.fps is None:
        frames = decode.frames if decode.frames is not None else adapter.profile.default_frames
    return hook(frames)


@dataclass
class DecodeOutcome:
    """What became of one job: ``status`` ("ok", "skipped" or one of :data:`FAILURE_STATUSES`),
    the file's ``sha256`` (None when it could not be read), the ``decoded`` video (frames
    torch.uint8 [F, H, W, 3]; only for "ok"), a one-line ``error`` for failures, and the
    ``seconds`` the job took (hashing and decoding)."""

    status: str
    sha256: Optional[str] = None
    decoded: Optional[DecodedVideo] = None
    error: Optional[str] = None
    seconds: float = 0.0


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(path: str, exc: BaseException) -> str:
    """A one-line message that starts with the path."""
    text = _one_line(str(exc)) or type(exc).__name__
    return text if text.startswith(path) else f"{path}: {text}"


def opens_as_video(path: str) -> bool:
    """Whether FFmpeg opens ``path`` as a container with a video stream (reads the header only;
    a fraction of a second even for a file of gigabytes)."""
    from ..video.probe import choose_stream, open_container

    try:
        with open_container(path) as container:
            choose_stream(container, path, None)
    except Exception:  # noqa: BLE001 - any failure means "not (obviously) a video"
        return False
    return True


def _decode_outcome(job: DecodeJob, sha: Optional[str], t0: float,
                    progress: Optional[Callable[[], None]] = None) -> DecodeOutcome:
    """Decode ``job`` (at its target size, with the file's hash when known) into an outcome."""
    try:
        decoded = decode_video(job.path, job.cfg, default_frames=job.default_frames, target_size=job.target_size,
                               sha256=sha, progress=progress)
    except Exception as exc:  # VideoDecodeError, and any crash of a decoder library on one file
        status = "timeout" if isinstance(exc, VideoDecodeError) and "timeout" in str(exc) else "decode_error"
        return DecodeOutcome(status, sha, None, _error(job.path, exc), time.perf_counter() - t0)
    return DecodeOutcome("ok", sha, decoded, None, time.perf_counter() - t0)


def run_job(job: DecodeJob, progress: Optional[Callable[[], None]] = None) -> DecodeOutcome:
    """Check, hash and decode one file in this process. Never raises for a bad file: the failure
    is the outcome's status and error. A file that does not open as a video is handed straight
    to the decoder for its error, without hashing (sha256 None). ``progress`` is called while
    hashing and once before decoding."""
    t0 = time.perf_counter()
    if not opens_as_video(job.path):
        outcome = _decode_outcome(job, None, t0)
        if outcome.status != "ok":
            return outcome
    try:
        sha = hash_file(job.path, progress=progress)
    except OSError as exc:
        cause = exc.strerror or str(exc)
        return DecodeOutcome("unreadable", None, None, f"{job.path}: cannot read ({cause})", time.perf_counter() - t0)
    if job.known_sha256 is not None and sha == job.known_sha256:
        return DecodeOutcome("skipped", sha, None, None, time.perf_counter() - t0)
    if progress is not None:
        progress()  # the decoder's own time limit starts now
    return _decode_outcome(job, sha, t0, progress)


# ------------------------------------------------------------------------------- worker side

def _parent_alive(main_pid: int) -> bool:
    """Whether the run's main process still runs (an exited one that its own parent has not
    reaped yet, a zombie, counts as gone)."""
    try:
        os.kill(main_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{main_pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


_term_deadline: Optional[float] = None


def _watch_parent(main_pid: int, ppid: int, fd: Optional[int] = None) -> None:
    """Exit this worker once the run's main process is gone (also after a SIGKILL of it, when no
    cleanup code runs there), or :data:`TERM_GRACE_S` seconds after a SIGTERM / SIGHUP. ``fd``:
    this worker's end of its pipe to the main process; where poll() reports a closed peer
    (Linux POLLRDHUP) the exit is immediate, since the kernel closes the main process's end the
    moment it dies, zombie or not; otherwise the process is looked at every
    :data:`PARENT_CHECK_S` seconds."""
    poller = None
    if fd is not None and hasattr(select, "poll") and hasattr(select, "POLLRDHUP"):
        poller = select.poll()
        poller.register(fd, select.POLLRDHUP)
    while True:
        if poller is not None:
            if any(event & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL)
                   for _, event in poller.poll(PARENT_CHECK_S * 1000)):
                os._exit(0)
        else:
            time.sleep(PARENT_CHECK_S)
        if os.getppid() != ppid or not _parent_alive(main_pid):
            os._exit(0)
        if _term_deadline is not None and time.monotonic() >= _term_deadline:
            os._exit(128 + signal.SIGTERM)


def _on_term(signum, frame) -> None:
    """SIGTERM / SIGHUP: the main process (which got the same signal from a process group or a
    scheduler) commits its work and stops the workers; exit on our own if it does not."""
    global _term_deadline
    if _term_deadline is None:
        _term_deadline = time.monotonic() + TERM_GRACE_S


def die_with_parent() -> bool:
    """Linux: have the kernel SIGKILL this process when its parent exits (``PR_SET_PDEATHSIG``).
    False where that is not available (the watchdog thread still applies)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _write_all(fd: int, data: memoryview) -> None:
    while len(data):
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, buffer: memoryview) -> None:
    while len(buffer):
        n = os.readv(fd, [buffer])
        if n == 0:
            raise EOFError("worker closed its pipe")
        buffer = buffer[n:]


def worker_main(conn: Connection, main_pid: int) -> None:
    """A decode worker: run jobs received on ``conn`` until it closes or sends None. SIGINT (a
    terminal's Ctrl-C reaches the whole process group) is left to the main process, which stops
    the workers itself; SIGTERM / SIGHUP give it :data:`TERM_GRACE_S` seconds to do so. The
    worker dies with its parent (see the module docstring)."""
    ppid = os.getppid()
    die_with_parent()
    if os.getppid() != ppid or not _parent_alive(main_pid):  # the parent died before prctl took effect
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_term)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _on_term)
    threading.Thread(target=_watch_parent, args=(main_pid, ppid, conn.fileno()), daemon=True).start()
    conn.send(READY)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        outcome = run_job(job, lambda: conn.send(PROGRESS))
        frames = None
        if outcome.decoded is not None:
            frames = np.ascontiguousarray(outcome.decoded.frames.numpy())
            outcome.decoded = dataclasses.replace(outcome.decoded, frames=None)
        conn.send((outcome, None if frames is None else tuple(frames.shape)))
        if frames is not None and frames.size:
            _write_all(conn.fileno(), memoryview(frames).cast("B"))


# ------------------------------------------------------------------------------- parent side

#: Default decode workers when the tower runs on a GPU: the CPUs of this process less one, at most
#: this many (each worker is a process of ~100 MB with up to two decoded videos waiting; pass
#: ``--decode-workers N`` for more).
MAX_DEFAULT_WORKERS = 32
#: Default decode workers when the tower runs on the CPU: one per this many CPUs of this process,
#: at least one (the tower's threads take the cores; decoding is a few % of a CPU run's work).
CPUS_PER_WORKER_ON_CPU = 8


@dataclass(frozen=True)
class CpuShare:
    """The CPUs one process of a run may count on. ``cpus``: what this process may run on (its
    affinity mask and cgroup CPU quota, as ``joblib.cpu_count`` reads them; capped by Slurm's
    ``SLURM_CPUS_PER_TASK``); ``sharers``: processes of a launcher on this node that run on the
    same CPUs (``LOCAL_WORLD_SIZE``, else Slurm's ``SLURM_NTASKS_PER_NODE`` when no
    ``SLURM_CPUS_PER_TASK`` gives each task its own); ``source``: which of these applied."""

    cpus: int
    sharers: int = 1
    source: str = "affinity"

    @property
    def per_process(self) -> int:
        """CPUs for this process: ``cpus // sharers``, at least 1."""
        return max(1, self.cpus // max(1, self.sharers))


def _positive_env(env: Mapping[str, str], name: str) -> Optional[int]:
    value = env.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def usable_cpus() -> int:
    """CPUs this process may run on: the smallest of the machine's count, its affinity mask
    (which batch schedulers and ``taskset`` set) and its cgroup CPU quota (containers), at least 1
    (``joblib.cpu_count``)."""
    from joblib import cpu_count

    return max(1, int(cpu_count()))


def cpu_share(env: Optional[Mapping[str, str]] = None, cpus: Optional[int] = None) -> CpuShare:
    """The CPUs this process may count on (see :class:`CpuShare`). ``env``: the environment
    (default ``os.environ``); ``cpus``: the usable CPUs (default :func:`usable_cpus`).

    Under ``torchrun`` / ``accelerate launch`` every rank of a node inherits the same CPUs, so
    they are divided by ``LOCAL_WORLD_SIZE``. A Slurm task with ``--cpus-per-task`` owns that many
    (``SLURM_CPUS_PER_TASK`` caps the count, since without CPU binding the mask shows the whole
    node); without it, ``srun --ntasks-per-node K`` tasks share the node's CPUs K ways."""
    env = os.environ if env is None else env
    count = usable_cpus() if cpus is None else max(1, int(cpus))
    sources = ["affinity"]
    per_task = _positive_env(env, "SLURM_CPUS_PER_TASK")
    if per_task is not None and per_task < count:
        count, sources = per_task, ["SLURM_CPUS_PER_TASK"]
    sharers = _positive_env(env, "LOCAL_WORLD_SIZE")
    if sharers is not None:
        sources.append("LOCAL_WORLD_SIZE")
    elif per_task is None:
        sharers = _positive_env(env, "SLURM_NTASKS_PER_NODE")
        if sharers is not None:
            sources.append("SLURM_NTASKS_PER_NODE")
    return CpuShare(count, sharers or 1, "/".join(sources))


def tower_on_cpu(device: str) -> bool:
    """Whether ``--device device`` runs the tower on the CPU (``auto``: when CUDA is not available;
    ``cuda``, ``cuda:N``, ``mps``: not the CPU)."""
    from ..devices import runs_on_cpu

    if runs_on_cpu(device):
        return True
    if device == "auto":
        return not torch.cuda.is_available()
    return device.split(":", 1)[0] == "cpu"


def default_workers(on_cpu: bool, share: Optional[CpuShare] = None) -> int:
    """Decode workers per process when the user does not say, from this process's CPUs
    (``share``, default :func:`cpu_share`):

    - tower on a GPU (``on_cpu`` False): every CPU but one, which the main process needs to drive
      the device (frame uploads, kernel launches, the method, writing): ``per_process - 1``, at
      least 1, at most :data:`MAX_DEFAULT_WORKERS`;
    - tower on the CPU: its threads take every core, and decoding is a small part of the work
      (0.5-8 % of the stage time of a CPU run in benchmarks/RESULTS.md), so one worker per
      :data:`CPUS_PER_WORKER_ON_CPU` CPUs, at least 1; more would only hold more decoded videos
      in memory and take cores from the tower in bursts."""
    per_process = (share or cpu_share()).per_process
    if on_cpu:
        return max(1, per_process // CPUS_PER_WORKER_ON_CPU)
    return max(1, min(MAX_DEFAULT_WORKERS, per_process - 1))


def _context():
    """forkserver where it exists (fast, clean children: not forked from a process holding a
    model and threads), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


class _Worker:
    """One worker process, its pipe, and the job it is running (index into the job list)."""

    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=worker_main, args=(child, os.getpid()), daemon=True,
                                   name="aot-decode")
        self.process.start()
        child.close()
        self.job: Optional[int] = None
        self.started = 0.0  # when the job was handed out, or its last progress message
        self.dispatched = 0.0  # when the job was handed out
        self.ready = False  # its READY message has arrived

    def stop(self, kill: bool) -> None:
        """End the process (SIGKILL when ``kill``, else ask it to exit) and reap it; never waits
        long (see :func:`_stop_all`)."""
        _stop_all([self], kill_all=kill)


def _forget(process) -> None:
    """Leave a process that cannot be reaped out of multiprocessing's exit-time join (which
    would otherwise wait for it forever)."""
    children = getattr(multiprocessing.process, "_children", None)
    if isinstance(children, set):
        children.discard(process)


def _stop_all(workers: Sequence["_Worker"], kill_all: bool = False) -> None:
    """Stop ``workers`` together: idle ones are asked to exit (None on their pipe), busy ones
    (or all, with ``kill_all``) are killed; then one shared wait of :data:`CLOSE_WAIT_S`
    seconds, SIGKILL for any still alive, :data:`KILL_WAIT_S` more, and a process that still
    cannot be reaped is forgotten. Pipes are closed."""
    for worker in workers:
        kill = kill_all or worker.job is not None
        if not kill:
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                kill = True
        if kill and worker.process.is_alive():
            worker.process.kill()
    for wait_s in (CLOSE_WAIT_S, KILL_WAIT_S):
        deadline = time.monotonic() + wait_s
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        alive = [w for w in workers if w.process.is_alive()]
        if not alive:
            break
        for worker in alive:
            worker.process.kill()
    for worker in workers:
        if worker.process.is_alive():
            _forget(worker.process)
        worker.conn.close()


class DecodePool:
    """Runs :class:`DecodeJob` s ahead of the consumer and returns their outcomes in job order.

    ``workers``: processes (0: run each job in this process when its outcome is asked for).
    ``timeout``: seconds a job may take before its worker is killed (None or <= 0: no limit);
    ``grace``: extra seconds given to the decoder's own timeout check to report first.
    ``lookahead``: at most this many jobs handed out but not yet returned (bounds the decoded
    frames held in memory). Use as a context manager; :meth:`start` may be called early (it
    launches the processes in the background) so they start while a model loads.
    """

    def __init__(self, workers: int, timeout: Optional[float] = 60.0, lookahead: Optional[int] = None,
                 grace: Optional[float] = None) -> None:
        if workers < 0:
            raise ValueError(f"decode workers must be >= 0, got {workers}")
        self.workers = int(workers)
        self.timeout = float(timeout) if timeout and timeout > 0 else None
        self.grace = grace if grace is not None else (1.0 + 0.05 * self.timeout if self.timeout else 0.0)
        self.lookahead = max(1, lookahead if lookahead is not None else 2 * self.workers + 2)
        self._jobs: List[DecodeJob] = []
        self._outcomes: Dict[int, DecodeOutcome] = {}
        self._next_dispatch = 0
        self._next_return = 0
        self._pool: List[_Worker] = []
        self._starter: Optional[threading.Thread] = None
        self._start_error: Optional[BaseException] = None
        self._closed = False
        self._lock = threading.Lock()
        self._ctx = _context() if self.workers else None
        self.replaced = 0  # workers killed or lost and started again

    # -- lifetime -------------------------------------------------------------------------------
    def start(self) -> "DecodePool":
        """Launch the worker processes in a background thread (returns at once)."""
        if self.workers and self._starter is None:
            self._starter = threading.Thread(target=self._launch, name="aot-decode-start", daemon=True)
            self._starter.start()
        return self

    def _launch(self) -> None:
        try:
            for _ in range(self.workers):
                worker = _Worker(self._ctx)
                with self._lock:
                    if self._closed:  # closed while this one started: stop it at once
                        _stop_all([worker], kill_all=True)
                        return
                    self._pool.append(worker)
        except BaseException as exc:  # reported to the caller by _ready_pool
            self._start_error = exc

    def _ready_pool(self) -> None:
        if self._closed:
            raise DecodeWorkerError("the decode pool is closed")
        self.start()
        if self._starter is not None:
            self._starter.join()
        if self._start_error is not None:
            raise DecodeWorkerError(f"cannot start decode workers ({_one_line(str(self._start_error))})")

    def close(self) -> None:
        """Stop every worker (running jobs are abandoned). Safe to call more than once and from
        any exit path; waits at most a few seconds (see :func:`_stop_all`); a worker still being
        started is stopped by the starting thread."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, []
        _stop_all(pool)
        if self._starter is not None:
            # a worker the starting thread launches after this still stops: the thread stops it
            # when it sees the pool closed, and a worker whose main process has exited ends itself
            self._starter.join(CLOSE_WAIT_S + KILL_WAIT_S)

    def __enter__(self) -> "DecodePool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- jobs -----------------------------------------------------------------------------------
    def submit(self, jobs: Sequence[DecodeJob]) -> None:
        """Queue ``jobs`` (outcomes come back in this order, after those queued before)."""
        self._jobs.extend(jobs)

    def pending(self) -> int:
        """Outcomes not yet returned."""
        return len(self._jobs) - self._next_return

    def ready(self) -> bool:
        """Whether the next outcome can be returned without waiting."""
        if not self.pending():
            return False
        if not self.workers:
            return True
        self._pump(0.0)
        return self._next_return in self._outcomes

    def wait(self, seconds: Optional[float]) -> bool:
        """Wait up to ``seconds`` (None: as long as it takes) for the next outcome; True when it
        can be returned without waiting (or nothing is pending)."""
        if not self.pending() or not self.workers:
            return True
        self._ready_pool()
        deadline = None if seconds is None else time.monotonic() + seconds
        while self._next_return not in self._outcomes:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._pump(remaining)
        return True

    def next(self) -> DecodeOutcome:
        """The next outcome in job order (waits for it). IndexError when none is left."""
        if not self.pending():
            raise IndexError("no decode job left")
        index = self._next_return
        if not self.workers:
            outcome = run_job(self._jobs[index])
        else:
            self._ready_pool()
            while index not in self._outcomes:
                self._pump(None)
            outcome = self._outcomes.pop(index)
        self._next_return += 1
        if self.workers:
            self._dispatch()
        return outcome

    # -- internals ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        for worker in self._pool:
            if self._next_dispatch >= len(self._jobs) or self._next_dispatch - self._next_return >= self.lookahead:
                return
            if worker.job is None:
                index = self._next_dispatch
                try:
                    worker.conn.send(self._jobs[index])
                except (OSError, ValueError):  # the worker died while idle: replace it, send again
                    self._check_started(worker)
                    worker = self._replace(worker)
                    worker.conn.send(self._jobs[index])
                worker.job, worker.started = index, time.monotonic()
                worker.dispatched = worker.started
                self._next_dispatch += 1

    def _limit(self) -> Optional[float]:
        return None if self.timeout is None else self.timeout + self.grace

    def _pump(self, block: Optional[float]) -> None:
        """Hand out jobs, then wait up to ``block`` seconds (None: until something happens) for
        results, and enforce time limits."""
        if self._starter is not None and self._starter.is_alive():
            if block == 0.0:
                return
            self._ready_pool()
        self._dispatch()
        busy = [w for w in self._pool if w.job is not None]
        if not busy:
            return
        limit = self._limit()
        wait_s = block
        if limit is not None:
            now = time.monotonic()
            nearest = min(w.started + limit for w in busy) - now
            wait_s = max(0.0, nearest) if wait_s is None else min(wait_s, max(0.0, nearest))
        readable = wait([w.conn for w in busy], timeout=wait_s)
        for worker in busy:
            if worker.conn in readable:
                self._receive(worker)
        if limit is not None:
            now = time.monotonic()
            for worker in [w for w in self._pool if w.job is not None and now - w.started >= limit]:
                path = self._jobs[worker.job].path
                self._fail(worker, "timeout", f"{path}: no progress for {self.timeout:g} s (decode timeout); "
                                              "decoder process stopped")
        self._dispatch()

    def _receive(self, worker: _Worker) -> None:
        index = worker.job
        try:
            message = worker.conn.recv()
            while message in (READY, PROGRESS):
                if message == READY:
                    worker.ready = True
                else:
                    worker.started = time.monotonic()  # making progress: the time limit starts again
                if not worker.conn.poll(0):
                    return
                message = worker.conn.recv()
            outcome, shape = message
            if shape is not None:
                frames = np.empty(shape, dtype=np.uint8)
                if frames.size:
                    _read_exactly(worker.conn.fileno(), memoryview(frames).cast("B"))
                outcome.decoded = dataclasses.replace(outcome.decoded, frames=torch.from_numpy(frames))
        except (EOFError, OSError, ValueError) as exc:
            self._check_started(worker)
            code = worker.process.exitcode
            if code is None:
                worker.process.join(0.5)
                code = worker.process.exitcode
            how = (f"killed by signal {-code}" if code is not None and code < 0
                   else f"exit code {code}" if code is not None else _one_line(str(exc)) or "pipe closed")
            self._fail(worker, "crashed", f"{self._jobs[index].path}: the decoder process died ({how})")
            return
        self._outcomes[index] = outcome
        worker.job = None

    def _check_started(self, worker: _Worker) -> None:
        """A worker gone before it was ready fails the run, not a video (it would fail for every
        video: e.g. the main module cannot be imported in a child process)."""
        if worker.ready:
            return
        if not worker.conn.closed and worker.conn.poll(0):
            try:
                worker.ready = worker.conn.recv() == READY
            except (EOFError, OSError):
                pass
            if worker.ready:
                return
        worker.process.join(1.0)
        code = worker.process.exitcode
        raise DecodeWorkerError(f"a decode worker process failed to start (exit code {code}); {START_HINT}")

    def _fail(self, worker: _Worker, status: str, error: str) -> None:
        """Record a failure for the worker's job, and replace the worker."""
        index = worker.job
        self._outcomes[index] = DecodeOutcome(status, None, None, error, time.monotonic() - worker.dispatched)
        worker.job = None
        self._replace(worker)

    def _replace(self, worker: _Worker) -> _Worker:
        """Kill ``worker`` and put a new one in its place."""
        worker.stop(kill=True)
        fresh = _Worker(self._ctx)
        self._pool[self._pool.index(worker)] = fresh
        self.replaced += 1
        return fresh
