"""The process model of `aot compress`: whatever ends a run (SIGKILL, SIGTERM, an unexpected
exception) at whatever stage (before the decode workers start, while the model loads, while a
worker decodes, while the tower runs, while a shard is committed), no process it started
survives, and the run never hangs.

Each run is a subprocess (tests/stage_driver.py) holding at the stage under test; every process
of the run (the main one, the forkserver, the decode workers, multiprocessing's resource tracker)
carries a marker in its environment, so survivors are found even after they were re-parented.
The tests synchronise on files and on the named pipe a worker opens, with generous deadlines.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import List

import pytest

from aot_cli.cache import TokenCache
from checkpoints import build_siglip
from proctools import marked as find_marked
from proctools import wait_until
from videogen import make_video

DRIVER = Path(__file__).resolve().parent / "stage_driver.py"
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
#: Seconds a run may take to reach a stage on a busy machine (imports, model load).
REACH_S = 180.0
#: The bar: no process of a run may be left this long after its main process is gone.
SURVIVE_S = 10.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build_siglip(tmp_path_factory.mktemp("proc-ckpt") / "siglip")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proc-clips")
    make_video(root / "a1.mp4", n=8)
    make_video(root / "a2.mp4", n=10)
    return root


def marked(marker: str) -> List[int]:
    """Live processes of the run whose environment holds ``AOT_TEST_RUN=marker``."""
    return find_marked("AOT_TEST_RUN", marker)


class Run:
    """One `aot compress` subprocess under the stage driver."""

    def __init__(self, tmp_path: Path, stage: str, args: List[str], allow_pipes: bool = False) -> None:
        self.control = tmp_path / f"ctl-{stage}-{uuid.uuid4().hex[:6]}"
        self.control.mkdir()
        self.marker = uuid.uuid4().hex
        env = dict(os.environ, AOT_TEST_RUN=self.marker)
        cmd = [sys.executable, str(DRIVER), stage, str(self.control)]
        cmd += ["--allow-pipes"] if allow_pipes else []
        cmd += ["--", "compress", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=tmp_path)

    def reached(self) -> None:
        wait_until(lambda: (self.control / "reached").exists() or self.proc.poll() is not None, REACH_S,
                   "the run to reach its stage")
        assert self.proc.poll() is None, self.proc.communicate()[1][-3000:]

    def workers_up(self) -> None:
        """main, resource tracker, forkserver and at least one decode worker."""
        wait_until(lambda: len(marked(self.marker)) >= 4, REACH_S, "the decode workers to start")

    def finish(self, timeout: float = 120.0):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def no_survivors(self) -> None:
        wait_until(lambda: not marked(self.marker), SURVIVE_S, "every process of the run to end")

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        for pid in marked(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def base_args(ckpt: Path, out: Path) -> List[str]:
    return ["-o", str(out), "--model", str(ckpt), "--frames", "4", "--dtype", "fp32", "--decode-workers", "1",
            "--flush-every", "0", "--decode-timeout", "600"]


def hold_decoder(fifo: Path, run: Run) -> int:
    """Open the pipe for writing once a decode worker opened it for reading (the worker is then
    inside the decoder); returns the write end."""
    def opened() -> bool:
        nonlocal fd
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            assert run.proc.poll() is None, run.proc.communicate()[1][-3000:]
            return False
        return True

    fd = -1
    wait_until(opened, REACH_S, "a decode worker to open the named pipe")
    return fd


STAGES = ["start", "model", "decode", "tower", "commit"]
ENDINGS = {"start": ["kill", "raise"], "model": ["kill", "raise", "term"], "decode": ["kill", "kill-unreaped", "term"],
           "tower": ["kill", "raise", "term"], "commit": ["kill", "raise"]}


@pytest.mark.parametrize("stage,ending", [(s, e) for s in STAGES for e in ENDINGS[s]])
def test_no_process_survives_any_ending_at_any_stage(ckpt, clips, tmp_path, stage, ending):
    inputs = [str(clips / "a1.mp4"), str(clips / "a2.mp4")]
    fifo = None
    if stage == "decode":
        fifo = tmp_path / "held.mp4"
        os.mkfifo(fifo)
        inputs = [str(fifo)] + inputs
    run = Run(tmp_path, "none" if stage == "decode" else stage, [*inputs, *base_args(ckpt, tmp_path / "cache")],
              allow_pipes=stage == "decode")
    fd = -1
    try:
        if stage == "decode":
            fd = hold_decoder(fifo, run)
        else:
            run.reached()
        if stage != "start":
            run.workers_up()
        if ending == "kill":
            run.proc.send_signal(signal.SIGKILL)
            run.proc.wait(60)
            run.no_survivors()
            return
        if ending == "kill-unreaped":  # a parent slow to reap: the main process stays a zombie meanwhile
            os.kill(run.proc.pid, signal.SIGKILL)
            wait_until(lambda: run.proc.pid not in marked(run.marker), 60, "the main process to die")
            run.no_survivors()
            run.proc.wait(60)
            return
        if ending == "term":
            run.proc.send_signal(signal.SIGTERM)
            code, _, err = run.finish()
            assert code == 128 + signal.SIGTERM, err[-3000:]
            assert "interrupted (SIGTERM)" in err and "Traceback" not in err
        else:
            (run.control / "raise").touch()
            code, _, err = run.finish()
            lines = [line for line in err.splitlines() if line.strip()]
            assert code == 2, err[-3000:]
            assert "Traceback" not in err
            assert [line for line in lines if line.startswith("aot: error:")] == \
                [f"aot: error: unexpected InjectedFault: injected failure at {stage}"], lines
        run.no_survivors()
    finally:
        if fd >= 0:
            os.close(fd)
        run.cleanup()


def test_sigterm_commits_finished_videos_and_exits_nonzero(ckpt, clips, tmp_path):
    """Finished videos wait in memory (--flush-every 1000) while a named pipe holds the decoder;
    SIGTERM commits them, reports them, and exits with 128 + 15."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(clips / "a1.mp4", data / "a1.mp4")
    shutil.copy(clips / "a2.mp4", data / "a2.mp4")
    fifo = data / "z_pipe.mp4"
    os.mkfifo(fifo)
    out = tmp_path / "cache"
    args = [str(data), "-o", str(out), "--model", str(ckpt), "--jsonl", "--flush-every", "1000", "--decode-timeout",
            "600", "--frames", "4", "--dtype", "fp32", "--decode-workers", "1", "--batch-frames", "4"]
    run = Run(tmp_path, "added", args, allow_pipes=True)
    fd = -1
    try:
        fd = hold_decoder(fifo, run)
        added = run.control / "added"
        wait_until(lambda: added.exists() and len(added.read_text().split()) == 2, REACH_S,
                   "a1 and a2 to finish the tower")
        assert not list((out / "shards").glob("*.safetensors"))  # nothing committed yet
        run.proc.send_signal(signal.SIGTERM)
        code, stdout, stderr = run.finish()
        run.no_survivors()
    finally:
        if fd >= 0:
            os.close(fd)
        run.cleanup()
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    assert "interrupted (SIGTERM)" in stderr and "rerun the same command to resume" in stderr
    import json

    done = sorted(json.loads(line)["id"] for line in stdout.splitlines() if json.loads(line)["status"] == "ok")
    assert done == ["a1.mp4", "a2.mp4"]
    assert sorted(TokenCache(out).ids()) == done


def test_sigkill_of_a_worker_parent_chain_leaves_nothing(ckpt, clips, tmp_path):
    """The forkserver is the workers' parent: killing it (not the main process) also ends them
    (PR_SET_PDEATHSIG); the run reports the lost worker as a crashed video and ends."""
    fifo = tmp_path / "held.mp4"
    os.mkfifo(fifo)
    run = Run(tmp_path, "none", [str(fifo), *base_args(ckpt, tmp_path / "cache")], allow_pipes=True)
    fd = -1
    try:
        fd = hold_decoder(fifo, run)
        run.workers_up()
        def parent(pid: int) -> int:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

        forkservers = [pid for pid in marked(run.marker) if parent(pid) == run.proc.pid
                       and b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(forkservers) == 1
        workers = [pid for pid in marked(run.marker) if parent(pid) == forkservers[0]]
        assert workers
        os.kill(forkservers[0], signal.SIGKILL)
        wait_until(lambda: not set(workers) & set(marked(run.marker)), SURVIVE_S,
                   "the workers to die with the forkserver")
        code, _, err = run.finish()
        assert code == 1 and "failed (crashed)" in err and "Traceback" not in err, err[-3000:]
        run.no_survivors()
    finally:
        if fd >= 0:
            os.close(fd)
        run.cleanup()
