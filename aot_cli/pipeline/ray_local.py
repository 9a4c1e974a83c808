"""A private local Ray for one `aot compress --engine ray` run, which never outlives the command.

Why not ``ray.init()`` in the command itself: the Ray processes it starts (GCS server, raylet,
dashboard head, log monitor, agents, workers) are not all ended by the kernel when the command
dies. After a SIGKILL of a driver that started its own Ray (Ray 2.60, measured here), the GCS
server and raylet follow it, but the dashboard and runtime-env agents run on for about a minute
and one is left a zombie; a SIGKILL of the whole process group does not reach the workers either
(each is the leader of its own process group).

So the command starts a *keeper* (``python -m aot_cli.pipeline.ray_local``) in a session of its
own (a terminal's Ctrl-C or a SIGKILL sent to the command's process group does not reach it). The
keeper marks itself a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): every process Ray starts
below it, daemonised or not, stays its descendant. It runs ``ray start --head`` (free ports,
``--temp-dir`` a directory of the run's own, no dashboard UI, no usage reporting; Ray listens on the
node's address with its default token authentication) and prints ``ready <address>`` on its stdout. Then it waits for its stdin, a pipe from the command, to
close: the kernel closes it the moment the command exits, however it exits (SIGKILL and an
out-of-memory kill included); the kernel also sends the keeper SIGTERM when the command dies
(``PR_SET_PDEATHSIG``). Either way the keeper ends every descendant (SIGTERM, then SIGKILL after
:data:`TERM_WAIT_S` seconds), reaps them, removes the run's Ray directory and exits.

Linux only (``/proc``, ``prctl``); elsewhere the ray engine needs ``--ray-address``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

#: prctl options (linux/prctl.h).
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: Seconds the keeper gives Ray's processes after SIGTERM before it kills them.
TERM_WAIT_S = 1.0
#: Seconds `ray start --head` may take (imports and process starts on a busy machine).
START_TIMEOUT_S = 180.0
#: Seconds the command waits for the keeper to end Ray at the end of a run.
STOP_WAIT_S = 20.0
READY = "ready"
FAILED = "failed"


class RayStartError(RuntimeError):
    """The private local Ray could not be started (one line)."""


def supported() -> bool:
    """Whether this system can run the keeper (Linux: ``/proc`` and ``prctl``)."""
    return sys.platform.startswith("linux") and os.path.isdir("/proc")


# ----------------------------------------------------------------------------- process tree

def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: str) -> Optional[List[bytes]]:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...), None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(root: int) -> List[int]:
    """Live (not zombie) processes below ``root``, read from /proc."""
    children: Dict[int, List[int]] = {}
    zombie = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(entry)
        if fields is None or len(fields) < 2:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        if fields[0] in (b"Z", b"X"):
            zombie.add(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if child not in zombie:
                found.append(child)
    return found


def _reap() -> None:
    """Collect every exited child (orphans re-parented to this subreaper included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def end_tree(root: int, term_wait: float = TERM_WAIT_S) -> None:
    """SIGTERM every process below ``root``, SIGKILL what is left after ``term_wait`` seconds,
    until none is left (reaping the exited ones when ``root`` is this process)."""
    for sig, wait_s in ((signal.SIGTERM, term_wait), (signal.SIGKILL, 2.0), (signal.SIGKILL, 2.0),
                        (signal.SIGKILL, 5.0)):
        pids = descendants(root)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if root == os.getpid():
                _reap()
            if not descendants(root):
                return
            time.sleep(0.05)


# ----------------------------------------------------------------------------- keeper side

def _ray_start_command(temp_dir: str, num_cpus: int) -> List[str]:
    return [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())",
            "start", "--head", "--port=0", f"--num-cpus={num_cpus}",
            f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats"]


def _say(text: str) -> None:
    try:
        os.write(1, (text + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            lines = [ln.strip() for ln in handle.read()[-8192:].decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def keeper_main(temp_dir: str, num_cpus: int) -> int:
    """The keeper (see the module docstring): start Ray under this process, report its address,
    end it when stdin closes or a SIGTERM / SIGHUP arrives."""
    parent = os.getppid()
    stop = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGHUP, lambda *_: stop.append(1))
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    poller = select.poll()
    poller.register(0, select.POLLIN | select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0))

    def released(wait_ms: int) -> bool:
        """Whether the command is gone or asked for the end (its pipe closed or written to)."""
        if stop or os.getppid() != parent:
            return True
        try:
            return bool(poller.poll(wait_ms))
        except InterruptedError:
            return bool(stop)

    log = os.path.join(temp_dir, "ray-start.log")
    try:
        with open(log, "wb") as out:
            starter = subprocess.Popen(_ray_start_command(temp_dir, num_cpus), stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while starter.poll() is None:
            if released(200) or time.monotonic() > deadline:
                _say(f"{FAILED} `ray start --head` did not finish in {START_TIMEOUT_S:g} s"
                     if not stop and os.getppid() == parent else f"{FAILED} stopped")
                return 1
        if starter.returncode != 0:
            _say(f"{FAILED} `ray start --head` failed (exit {starter.returncode}): {_last_line(log)}")
            return 1
        try:
            with open(os.path.join(temp_dir, "ray_current_cluster"), encoding="utf-8") as handle:
                address = handle.read().strip()
        except OSError as exc:
            _say(f"{FAILED} Ray started but wrote no address ({exc.strerror or exc})")
            return 1
        _say(f"{READY} {address}")
        while not released(1000):
            _reap()
        return 0
    finally:
        end_tree(os.getpid())
        _reap()
        shutil.rmtree(temp_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- command side

def _temp_root() -> str:
    """Where the run's Ray directory goes: the temporary directory, unless its path is so long
    that Ray's socket paths (about 70 characters below it) would pass the 107-byte limit."""
    root = tempfile.gettempdir()
    return root if len(root) <= 30 else "/tmp"


class PrivateRay:
    """Start a private local Ray under a keeper (see the module docstring) and stop it.

    ``num_cpus``: CPUs the Ray node offers. Use as a context manager: ``address`` is set on
    entry (RayStartError, one line, when Ray does not start); on exit, and whatever ends the
    command, the keeper ends every Ray process and removes the run's Ray directory
    (``temp_dir``)."""

    def __init__(self, num_cpus: int) -> None:
        self.num_cpus = max(1, int(num_cpus))
        self.temp_dir: Optional[str] = None
        self.address: Optional[str] = None
        self.keeper: Optional[subprocess.Popen] = None

    def __enter__(self) -> "PrivateRay":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> str:
        if not supported():
            raise RayStartError("--engine ray: starting a private Ray needs Linux; start a cluster with "
                                "`ray start --head` and pass --ray-address")
        self.temp_dir = tempfile.mkdtemp(prefix="aot-ray-", dir=_temp_root())
        self.keeper = subprocess.Popen([sys.executable, "-m", "aot_cli.pipeline.ray_local", self.temp_dir,
                                        str(self.num_cpus)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        line = self._first_line(START_TIMEOUT_S + 10.0)
        if line.startswith(READY + " "):
            self.address = line.split(" ", 1)[1].strip()
            return self.address
        why = line[len(FAILED):].strip() if line.startswith(FAILED) else "the keeper process ended without a word"
        raise RayStartError(f"--engine ray: cannot start a local Ray: {why}")

    def _first_line(self, seconds: float) -> str:
        assert self.keeper is not None and self.keeper.stdout is not None
        fd = self.keeper.stdout.fileno()
        data = b""
        deadline = time.monotonic() + seconds
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"{FAILED} no answer in {seconds:g} s"
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
        return data.decode("utf-8", "replace").split("\n", 1)[0]

    def stop(self) -> None:
        """End the keeper's Ray (waits at most :data:`STOP_WAIT_S` seconds, then kills what is
        left itself). Safe to call more than once."""
        keeper, self.keeper = self.keeper, None
        if keeper is not None:
            for stream in (keeper.stdin, keeper.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
            try:
                keeper.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                end_tree(keeper.pid, term_wait=1.0)
                keeper.kill()
                keeper.wait()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


if __name__ == "__main__":
    sys.exit(keeper_main(sys.argv[1], int(sys.argv[2])))
