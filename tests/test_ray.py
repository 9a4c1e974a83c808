"""`aot compress --engine ray` (aot_cli/pipeline/ray_engine.py, ray_local.py): the same cache as
the local engine, failures recorded, resumable after a SIGKILL of the whole command without
duplicates, and no Ray process left behind, with a private local Ray (2 CPUs) started by the
command. Also the checks that need no Ray: engine flags and URL refusals.

Every run is a subprocess whose environment carries a marker that all its processes inherit
(Ray's GCS server, raylet, agents and workers included), so survivors are found by listing
processes (/proc) even after they were re-parented. Synchronised on files, with generous
deadlines; no sleeps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch

from aot_cli.cache import TokenCache
from proctools import marked, wait_until
from videogen import make_random_bytes, make_video

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; a private Ray needs Linux")

#: Seconds a run may take on a busy machine (Ray's start, two model loads, eight clips).
RUN_S = 400.0
#: Seconds every process of a run may take to end once the command is gone.
GONE_S = 30.0
CLIPS = 8


@pytest.fixture(scope="module")
def ckpt(tiny_siglip_dir) -> Path:
    """The session's tiny SigLIP checkpoint (tests/conftest.py)."""
    return tiny_siglip_dir


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-clips")
    for i in range(CLIPS):
        make_video(root / f"clip{i}.mp4", n=6 + i, size=(64 + 16 * (i % 3), 48))
    make_random_bytes(root / "broken.mp4")
    return root


def args(ckpt: Path, clips: Path, out: Path, *extra: str) -> List[str]:
    """The command's arguments (the default --flush-every: videos wait for their commit, which an
    actor makes on its schedule or when it has nothing left to do)."""
    return [str(clips), "-o", str(out), "--model", str(ckpt), "--frames", "4", "--dtype", "fp32", *extra]


def start(argv: List[str], cwd: Path, marker: str) -> subprocess.Popen:
    env = dict(os.environ, AOT_TEST_RUN=marker)
    return subprocess.Popen([sys.executable, "-m", "aot_cli.cli", "compress", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, start_new_session=True)


def run(argv: List[str], cwd: Path, marker: Optional[str] = None) -> Tuple[int, str, str]:
    proc = start(argv, cwd, marker or uuid.uuid4().hex)
    out, err = proc.communicate(timeout=RUN_S)
    return proc.returncode, out, err


def survivors(marker: str) -> List[str]:
    """What is left of a run: its processes' command lines."""
    left = []
    for pid in marked("AOT_TEST_RUN", marker):
        left.append(f"{pid}: {cmdline(pid)[:120]}")
    return left


def assert_nothing_left(marker: str) -> None:
    wait_until(lambda: not survivors(marker), GONE_S, "every process of the run (Ray's included) to end")


def ok_rows(cache: Path) -> Counter:
    """How many "ok" index rows each video id has, over every index part."""
    count: Counter = Counter()
    for part in sorted((cache / "index").glob("*.jsonl")):
        for line in part.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("status") == "ok":
                    count[row["id"]] += 1
    return count


def tensors_of(cache: Path) -> Dict[str, Dict[str, torch.Tensor]]:
    with TokenCache(cache) as c:
        return {vid: c[vid].tensors() for vid in c.ids()}


@pytest.fixture(scope="module")
def local_cache(ckpt, clips, tmp_path_factory) -> Path:
    """The local engine's cache of the same clips and configuration (the reference)."""
    out = tmp_path_factory.mktemp("ray-local") / "cache"
    code, _, err = run(args(ckpt, clips, out, "--decode-workers", "1"), out.parent)
    assert code == 1, err[-3000:]
    return out


# ----------------------------------------------------------------------------- with Ray

def test_ray_engine_writes_the_local_engines_cache_and_records_the_broken_file(ckpt, clips, local_cache, tmp_path):
    pytest.importorskip("ray")
    marker = uuid.uuid4().hex
    out = tmp_path / "cache"
    code, stdout, err = run(args(ckpt, clips, out, "--engine", "ray", "--ray-actors", "2", "--decode-workers", "0",
                                 "--jsonl"), tmp_path, marker)
    assert code == 1, err[-3000:]
    events = [json.loads(line) for line in stdout.splitlines()]
    assert sorted(e["id"] for e in events if e["status"] == "ok") == [f"clip{i}.mp4" for i in range(CLIPS)]
    assert [e["id"] for e in events if e["status"] not in ("ok", "skipped")] == ["broken.mp4"]
    assert f"wrote {out}: {CLIPS} done, 0 skipped, 1 failed" in err
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failures] == ["broken.mp4"] and failures[0]["status"] == "decode_error"
    parts = sorted(p.name for p in (out / "index").glob("*.jsonl"))
    assert parts == ["ray-actor00000.jsonl", "ray-actor00001.jsonl"], parts  # each actor its own part
    assert ok_rows(out) == Counter({f"clip{i}.mp4": 1 for i in range(CLIPS)})
    ours, reference = tensors_of(out), tensors_of(local_cache)
    assert sorted(ours) == sorted(reference)
    for vid, tensors in ours.items():
        assert tensors.keys() == reference[vid].keys()
        for name, value in tensors.items():
            torch.testing.assert_close(value, reference[vid][name], rtol=0, atol=1e-5, msg=f"{vid} {name}")
    assert_nothing_left(marker)


def committed(cache: Path) -> int:
    return sum(ok_rows(cache).values()) if (cache / "index").is_dir() else 0


def interrupt_after_a_commit(argv: List[str], cwd: Path, marker: str, out: Path, signum: int) -> Tuple[int, str]:
    """Start the command, wait until it committed one more video than the cache held, send
    ``signum`` to its whole process group; (exit status, stderr) once every process is gone."""
    before = committed(out)
    proc = start(argv, cwd, marker)
    try:
        wait_until(lambda: committed(out) > before or proc.poll() is not None, RUN_S, "a committed video")
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert len(survivors(marker)) > 3  # the command, the keeper and Ray's processes
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=RUN_S)
        assert_nothing_left(marker)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in marked("AOT_TEST_RUN", marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return proc.returncode, err


def test_sigterm_then_sigkill_of_the_whole_command_leave_no_ray_process_and_a_rerun_completes_once(
        ckpt, clips, tmp_path):
    pytest.importorskip("ray")
    marker = uuid.uuid4().hex
    out = tmp_path / "cache"
    argv = args(ckpt, clips, out, "--engine", "ray", "--decode-workers", "1", "--flush-every", "0")
    # SIGTERM (as Slurm sends it to the job's process group): finished videos committed, exit 143
    code, err = interrupt_after_a_commit(argv + ["--ray-actors", "1"], tmp_path, marker, out, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "interrupted (SIGTERM)" in err
    first = ok_rows(out)
    assert first and all(n == 1 for n in first.values())
    # SIGKILL of the whole process group: no cleanup code runs in the command
    code, _ = interrupt_after_a_commit(argv + ["--ray-actors", "2"], tmp_path, marker, out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    second = ok_rows(out)
    assert len(second) > len(first) and all(n == 1 for n in second.values())
    code, _, err = run(argv + ["--ray-actors", "2"], tmp_path, marker)
    assert code == 1, err[-3000:]
    assert ok_rows(out) == Counter({f"clip{i}.mp4": 1 for i in range(CLIPS)})  # all cached, none twice
    with TokenCache(out) as cache:
        assert sorted(cache.ids()) == [f"clip{i}.mp4" for i in range(CLIPS)]
        assert [row["id"] for row in cache.failures()] == ["broken.mp4"]
    assert_nothing_left(marker)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("quiet", [False, True], ids=["notes", "quiet"])
def test_a_killed_actor_costs_only_what_it_had_not_committed_and_nothing_is_committed_twice(
        ckpt, clips, local_cache, tmp_path, quiet):
    """Decoding in Ray tasks; one actor SIGKILLed mid-run: Ray restarts it, its videos are
    handed out again, every clip ends up committed once with the local engine's tokens. Ray's
    message about the dead worker is one line of aot's (none at all with -q)."""
    pytest.importorskip("ray")
    marker = uuid.uuid4().hex
    out = tmp_path / "cache"
    proc = start(args(ckpt, clips, out, "--engine", "ray", "--ray-actors", "2", "--ray-decode", "tasks",
                      "--decode-workers", "1", "--flush-every", "0", "--jsonl", *(["-q"] if quiet else [])),
                 tmp_path, marker)
    try:
        wait_until(lambda: committed(out) >= 1 or proc.poll() is not None, RUN_S, "a committed video")
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        actors = [pid for pid in marked("AOT_TEST_RUN", marker) if cmdline(pid).startswith("ray::VideoActor")]
        assert len(actors) == 2, [cmdline(pid) for pid in marked("AOT_TEST_RUN", marker)]
        os.kill(actors[0], signal.SIGKILL)
        stdout, err = proc.communicate(timeout=RUN_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err[-3000:]
    if quiet:
        assert err == ""  # only errors with -q, and there are none: Ray's messages included
    else:
        assert "the Ray actor of part ray-actor0000" in err and "are handed out again" in err, err[-3000:]
        assert f"Ray: a worker died (pid {actors[0]}, SYSTEM_ERROR" in err, err[-3000:]
        assert "(raylet)" not in err and "\x1b[" not in err and "Traceback" not in err, err[-3000:]
        assert all(len(line) < 500 for line in err.splitlines()), err[-3000:]
    oks = Counter(e["id"] for e in map(json.loads, stdout.splitlines()) if e["status"] == "ok")
    assert oks == Counter({f"clip{i}.mp4": 1 for i in range(CLIPS)})  # each reported once
    assert ok_rows(out) == Counter({f"clip{i}.mp4": 1 for i in range(CLIPS)})  # and committed once
    ours, reference = tensors_of(out), tensors_of(local_cache)
    for vid, tensors in ours.items():
        for name, value in tensors.items():
            torch.testing.assert_close(value, reference[vid][name], rtol=0, atol=1e-5, msg=f"{vid} {name}")
    assert_nothing_left(marker)


def test_with_an_address_the_run_joins_the_cluster_and_leaves_it_running(ckpt, clips, local_cache, tmp_path):
    pytest.importorskip("ray")
    from aot_cli.pipeline.ray_local import PrivateRay

    marker = uuid.uuid4().hex
    out = tmp_path / "cache"
    some = [str(clips / "clip0.mp4"), str(clips / "clip1.mp4")]
    os.environ["AOT_TEST_RUN"] = marker  # the cluster's processes carry the marker too
    try:
        with PrivateRay(2) as cluster:
            ray_processes = set(marked("AOT_TEST_RUN", marker)) - {os.getpid()}
            env = dict(os.environ, RAY_AUTH_MODE="token")  # Ray's token auth for an explicit HOST:PORT
            proc = subprocess.run([sys.executable, "-m", "aot_cli.cli", "compress", *some, "-o", str(out), "--model",
                                   str(ckpt), "--frames", "4", "--dtype", "fp32", "--engine", "ray", "--ray-address",
                                   cluster.address, "--decode-workers", "0"], capture_output=True, text=True, env=env,
                                  cwd=tmp_path, timeout=RUN_S)
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert f"wrote {out}: 2 done, 0 skipped, 0 failed" in proc.stderr
            alive = set(marked("AOT_TEST_RUN", marker))
            assert ray_processes <= alive  # the cluster was left running
            wait_until(lambda: not [p for p in marked("AOT_TEST_RUN", marker)
                                    if cmdline(p).startswith("ray::VideoActor")], GONE_S, "the run's actors to end")
        assert_nothing_left_but(marker, os.getpid())
    finally:
        os.environ.pop("AOT_TEST_RUN", None)
    ours, reference = tensors_of(out), tensors_of(local_cache)
    assert sorted(ours) == ["clip0.mp4", "clip1.mp4"]
    for vid, tensors in ours.items():
        for name, value in tensors.items():
            torch.testing.assert_close(value, reference[vid][name], rtol=0, atol=1e-5, msg=f"{vid} {name}")


def assert_nothing_left_but(marker: str, pid: int) -> None:
    wait_until(lambda: not [p for p in marked("AOT_TEST_RUN", marker) if p != pid], GONE_S,
               "every process of the cluster to end")


# ----------------------------------------------------------------------------- without Ray

def cli(argv: List[str], cwd: Path) -> Tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "aot_cli.cli", "compress", *argv], capture_output=True, text=True,
                          cwd=cwd, timeout=RUN_S)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("extra,message", [
    (["--ray-address", "auto"], "aot: error: --ray-address: needs --engine ray"),
    (["--ray-actors", "2"], "aot: error: --ray-actors: needs --engine ray"),
    (["--engine", "ray", "--ray-actors", "0"], "aot: error: --ray-actors: must be at least 1, got 0"),
    (["--engine", "ray", "--ray-actors-per-gpu", "0"], "aot: error: --ray-actors-per-gpu: must be at least 1"),
    (["--engine", "ray", "--ray-address", "ray://head:10001"], "aot: error: --ray-address: ray://head:10001: Ray "
                                                               "Client (ray://) addresses are not supported"),
    (["--engine", "ray", "--ray-address", "head"], "aot: error: --ray-address: expected 'auto' or HOST:PORT"),
    (["--engine", "ray", "--ray-decode", "tasks", "--decode-workers", "0"], "aot: error: --decode-workers: with "
                                                                            "--ray-decode tasks"),
    (["--engine", "ray", "--num-shards", "2", "--shard-id", "0"], "aot: error: --engine ray: the ray engine "
                                                                  "spreads the videos over its actors itself"),
])
def test_engine_flags_are_checked_before_anything_runs(ckpt, clips, tmp_path, extra, message):
    if "--engine" in extra and "--num-shards" not in extra:
        pytest.importorskip("ray")  # without Ray, --engine ray is refused first (tested below)
    out = tmp_path / "cache"
    code, err = cli(args(ckpt, clips, out, *extra), tmp_path)
    assert code == 2 and err.startswith(message), err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_the_ray_engine_without_ray_installed_is_one_line(monkeypatch):
    import importlib.util

    from aot_cli.pipeline.settings import UsageError, build_settings

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "ray" else real(name, *rest))
    with pytest.raises(UsageError, match=r"^--engine ray: Ray is not installed \(pip install 'aot-cli\[ray\]'\)$"):
        build_settings(None, {"engine": "ray"})
    assert build_settings(None, {"engine": "local"}).engine.name == "local"  # the local engine needs no Ray


def test_one_video_file_output_is_refused_with_the_ray_engine(ckpt, clips, tmp_path):
    pytest.importorskip("ray")
    code, err = cli([str(clips / "clip0.mp4"), "-o", str(tmp_path / "one.safetensors"), "--model", str(ckpt),
                     "--engine", "ray"], tmp_path)
    assert code == 2 and err.startswith("aot: error: -o ") and "writes a cache directory" in err, err
    assert not (tmp_path / "one.safetensors").exists()


@pytest.mark.parametrize("url", ["s3://bucket/cache", "gs://bucket/cache", "https://host/cache", "file:///tmp/x"])
def test_a_url_output_is_refused_in_one_line_and_nothing_is_created(ckpt, clips, tmp_path, url):
    code, err = cli([str(clips), "-o", url, "--model", str(ckpt)], tmp_path)
    scheme = url.split("://")[0]
    assert code == 2 and err == f"aot: error: -o {url}: a URL ({scheme}://) given as the output; aot reads and " \
                                "writes local paths only (mount the bucket or share, or copy the files, and give " \
                                "that path)\n", err
    assert list(tmp_path.iterdir()) == []  # no directory named "s3:" (what happened before)


def test_a_url_input_on_the_command_line_is_refused_before_anything_runs(ckpt, clips, tmp_path):
    code, err = cli(["s3://bucket/a.mp4", str(clips / "clip0.mp4"), "-o", str(tmp_path / "c"), "--model", str(ckpt)],
                    tmp_path)
    assert code == 2 and err.startswith("aot: error: s3://bucket/a.mp4: a URL (s3://) given as an input"), err
    assert not (tmp_path / "c").exists()


def test_url_rows_of_a_list_and_a_manifest_are_failures_and_the_run_goes_on(ckpt, clips, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{clips / 'clip0.mp4'}\ngs://bucket/b.mp4\n")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{clips / 'clip1.mp4'},x\nhttps://host/v/c.mp4,y\n")
    out = tmp_path / "cache"
    code, err = cli(["--list", str(listing), "--manifest", str(manifest), "-o", str(out), "--model", str(ckpt),
                     "--frames", "4", "--decode-workers", "0"], tmp_path)
    assert code == 1, err
    with TokenCache(out) as cache:
        assert sorted(cache.ids()) == ["clip0.mp4", "clip1.mp4"]
        failed = {row["id"]: row for row in cache.failures()}
    assert sorted(failed) == ["gs://bucket/b.mp4", "https://host/v/c.mp4"]
    assert failed["gs://bucket/b.mp4"]["error"].startswith("gs://bucket/b.mp4: a URL (gs://) given as an input")
    assert failed["https://host/v/c.mp4"]["status"] == "unreadable"
    assert failed["https://host/v/c.mp4"]["meta"]["extra"] == {"label": "y"}


# ----------------------------------------------------------------------------- Ray's messages

RAYLET_DEATH = ("\x1b[33m(raylet)\x1b[0m A worker died or was killed while executing a task by an unexpected system "
                "error. To troubleshoot the problem, check the logs for the dead worker. Lease ID: 00ab Worker ID: 13 "
                "Node ID: 60 Worker IP address: 192.0.2.2 Worker port: 17081 Worker PID: 18096 Worker exit type: "
                "SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of "
                "file. Some common causes include: (1) the process was killed by the OOM killer")


def test_ray_messages_become_one_line_notes():
    """The lines Ray 2.x prints in the driver (captured from real runs), as aot's notes."""
    from aot_cli.pipeline.ray_messages import NOTE_CHARS, ray_note

    assert ray_note(RAYLET_DEATH) == ("Ray: a worker died (pid 18096, SYSTEM_ERROR: Worker unexpectedly exits with a "
                                      "connection error code 2.)")
    retried = ("\x1b[33m(raylet)\x1b[0m Task _decode_task failed. There are 1 retries remaining, so the task will be "
               "retried. Error: \nTraceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom\n")
    assert ray_note(retried) == ("Ray: Task _decode_task failed. There are 1 retries remaining, so the task will be "
                                 "retried.")
    assert ray_note("(VideoActor pid=41, ip=10.0.0.2) Unhandled error: x") == "Ray: Unhandled error: x"
    assert ray_note("\n  \x1b[0m\n") is None and ray_note("") is None
    long = ray_note("word " * 200)
    assert long.startswith("Ray: word") and len(long) <= len("Ray: ") + NOTE_CHARS and "\n" not in long


def test_ray_messages_capture_other_threads_stdout_and_the_ray_logger(capsys):
    """While captured: this thread's stdout stays stdout; what other threads print there and what
    the ``ray`` logger records become notes, handed over by drain() in this thread; released,
    the logger's own handlers are back."""
    import logging
    import threading

    from aot_cli.pipeline.ray_messages import RayMessages

    logger = logging.getLogger("ray")
    before = (list(logger.handlers), logger.propagate)
    notes: List[str] = []
    messages = RayMessages(notes.append)
    messages.capture()
    try:
        print('{"id": "a"}')
        thread = threading.Thread(target=lambda: print(RAYLET_DEATH))
        thread.start()
        thread.join()
        try:
            raise ValueError("boom")
        except ValueError:
            logger.error("Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1'): boom", exc_info=True)
        assert notes == []  # handed over only by drain(), in the driver's thread
        messages.drain()
    finally:
        messages.release()
    out, err = capsys.readouterr()
    assert out == '{"id": "a"}\n' and err == ""
    assert notes == ["Ray: a worker died (pid 18096, SYSTEM_ERROR: Worker unexpectedly exits with a connection "
                     "error code 2.)",
                     "Ray: Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1'): boom"]
    assert (list(logger.handlers), logger.propagate) == before


def test_an_address_where_nothing_answers_is_one_line_at_once(ckpt, clips, tmp_path):
    """--ray-address HOST:PORT with nothing listening: exit 2 in one line before Ray is asked (Ray
    itself retries for minutes, printing its C++ warnings), nothing created, no process left."""
    pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    marker = uuid.uuid4().hex
    out = tmp_path / "cache"
    code, stdout, err = run(args(ckpt, clips, out, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"), tmp_path,
                            marker)
    assert code == 2 and stdout == ""
    assert err.splitlines() == [f"aot: error: --ray-address 127.0.0.1:{port}: cannot join the Ray cluster (nothing "
                                "answers there: Connection refused; start it with `ray start --head` or give the "
                                "address it printed)"], err[-3000:]
    assert not out.exists()
    assert_nothing_left(marker)
