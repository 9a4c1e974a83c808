"""Batch runs of `aot compress`: inputs, resume, broken and hanging files, SIGKILL / SIGTERM,
write failures, ranks, cross-video tower batching, containers with wrong or missing counts.

Real clips from samples/ (copied under other names) plus short generated videos; a tiny random
SigLIP tower; 4 frames per video. Runs that must be killed or run side by side are subprocesses;
the others go through click's CliRunner in this process.
"""
from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import List, Optional

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from aot_cli.cache import CacheError, CacheWriter, TokenCache
from aot_cli.cli import main
from aot_cli.config import DecodeConfig, ModelConfig
from aot_cli.models import load_model
from aot_cli.pipeline.batch import Summary, run_batch
from aot_cli.pipeline.inputs import InputError, VideoInput, expand_inputs
from aot_cli.pipeline.ranks import RankInfo, detect_rank, device_for_rank, owner, take_share
from aot_cli.pipeline.run import RunConfig, compress_video
from aot_cli.pipeline.workers import DecodeJob, DecodePool, hash_file
from aot_cli.video import file_sha256
from checkpoints import build_siglip
from videogen import (encoder_available, make_lying_avi, make_random_bytes, make_text_file, make_truncated,
                      make_video, make_zero_bytes)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
BASE = ["--frames", "4", "--dtype", "fp32", "--decode-workers", "1", "-q"]


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build_siglip(tmp_path_factory.mktemp("batch-ckpt") / "siglip")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """10 good videos: the four samples under new names (one in a subfolder) and six generated
    ones (mp4, mkv and webm without frame counts, an AVI whose header claims 5x its frames)."""
    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    for clip, name in (("bikes.mp4", "clip_a.mp4"), ("carphone_pristine.mp4", "clip_b.mp4"),
                       ("motion.mov", "sub/clip_c.mov"), ("realshort.mp4", "sub/clip_d.mp4")):
        shutil.copy(SAMPLES / clip, root / name)
    make_video(root / "gen_1.mp4", n=12)
    make_video(root / "gen_2.mp4", n=20, size=(96, 64))
    make_video(root / "nocount.mkv", n=15)
    if encoder_available("libvpx-vp9"):
        make_video(root / "nocount.webm", codec="libvpx-vp9", n=15)
    else:
        make_video(root / "nocount.webm", codec="libvpx", n=15)
    honest = make_video(tmp_path_factory.mktemp("honest") / "honest.avi", codec="mpeg4", n=20).path
    make_lying_avi(honest, root / "lying.avi", claimed=100)
    make_video(root / "sub" / "gen_3.mp4", n=8)
    return root


def good_ids(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("broken")
    make_truncated(SAMPLES / "bikes.mp4", root / "truncated.mp4", keep=0.5)
    make_random_bytes(root / "random.mp4")
    make_zero_bytes(root / "empty.mp4")
    make_text_file(root / "notes.mp4")
    return root


def cli(args: List[str], cwd: Optional[Path] = None):
    runner = CliRunner()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        return runner.invoke(main, args, catch_exceptions=False)
    finally:
        os.chdir(old)


def events_of(stdout: str) -> List[dict]:
    """Every stdout line must be one JSON object."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def ok_rows(cache_dir: Path) -> List[dict]:
    """All 'ok' rows of all index parts whose shard exists (what a reader can serve)."""
    rows = []
    for part in sorted((cache_dir / "index").glob("*.jsonl")):
        for line in part.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("status") == "ok" and (cache_dir / row["shard"]).is_file():
                rows.append(dict(row, part=part.name))
    return rows


def assert_cache_sound(cache_dir: Path, expected_ids: List[str]) -> TokenCache:
    """Every id cached exactly once, every shard loads, every video reads back."""
    counts = Counter(row["id"] for row in ok_rows(cache_dir))
    assert sorted(counts) == sorted(expected_ids)
    assert set(counts.values()) == {1}, counts
    for shard in (cache_dir / "shards").glob("*.safetensors"):
        segments = TokenCache(shard)  # a shard read on its own: every committed segment
        for vid in segments.ids():
            segments[vid].tensors()
        if segments.segment(None, 0).header.end == shard.stat().st_size:  # one segment: plain safetensors
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():
                    f.get_tensor(key)
    cache = TokenCache(cache_dir)
    assert sorted(cache.ids()) == sorted(expected_ids)
    for vid in cache.ids():
        v = cache[vid]
        assert v.tokens.shape[0] == v.frame.shape[0] == v.kind.shape[0] > 0
    return cache


def aot_command(*args: str) -> List[str]:
    return [sys.executable, "-m", "aot_cli.cli", "compress", *args]


# ------------------------------------------------------------------------------------ inputs

def test_inputs_mix_list_stdin_manifest_and_ids(videos, tmp_path, monkeypatch):
    monkeypatch.chdir(videos)
    # a directory (recursive), a file, a glob and a list file together, de-duplicated by path;
    # paths in a list file are relative to the list file's directory, whatever the working directory
    listing = videos / "list.txt"
    listing.write_text("# comment\nclip_a.mp4\n\nsub/clip_d.mp4\n")
    try:
        items = expand_inputs(["sub", "clip_b.mp4", "gen_*.mp4"], list_file=str(listing))
        ids = [it.video_id for it in items]
        assert ids == ["clip_c.mov", "clip_d.mp4", "gen_3.mp4", "clip_b.mp4", "gen_1.mp4", "gen_2.mp4", "clip_a.mp4"]
        monkeypatch.chdir(tmp_path)
        moved = expand_inputs([], list_file=str(listing))
        assert [(it.video_id, it.path) for it in moved] == [("clip_a.mp4", videos / "clip_a.mp4"),
                                                            ("sub/clip_d.mp4", videos / "sub/clip_d.mp4")]
    finally:
        listing.unlink()
        monkeypatch.chdir(videos)
    # stdin list
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("clip_a.mp4\nlying.avi\n"))
    assert [it.video_id for it in expand_inputs([], list_file="-")] == ["clip_a.mp4", "lying.avi"]
    # CSV and JSONL manifests: relative to the manifest, other columns carried
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(f"path,label,split\n{videos / 'clip_a.mp4'},cat,train\n{videos / 'gen_1.mp4'},dog,val\n")
    items = expand_inputs([], manifest=str(csv_path))
    assert [it.extra for it in items] == [{"label": "cat", "split": "train"}, {"label": "dog", "split": "val"}]
    jl = videos / "m.jsonl"
    jl.write_text(json.dumps({"video": "sub/clip_c.mov", "label": 3, "tags": ["x"]}) + "\n")
    try:
        items = expand_inputs([], manifest=str(jl), path_column="video")
        assert items[0].video_id == "sub/clip_c.mov" and items[0].extra == {"label": 3, "tags": ["x"]}
        assert items[0].path.resolve() == (videos / "sub/clip_c.mov").resolve()
    finally:
        jl.unlink()
    # the same name from two places: a clear error, and --id hash resolves it
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(SAMPLES / "realshort.mp4", other / "clip_d.mp4")
    with pytest.raises(InputError, match="clip_d.mp4.*--id hash"):
        expand_inputs(["sub", str(other)])
    hashed = expand_inputs(["sub/clip_d.mp4", str(other / "clip_d.mp4")], id_mode="hash")
    assert len(hashed) == 1 and len(hashed[0].video_id) == 64  # same content twice is one video
    with pytest.raises(InputError, match="nothing_here"):
        expand_inputs(["nothing_here*.mp4"])


def test_manifest_columns_reach_the_cache(ckpt, videos, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{videos / n},L{i}\n" for i, n in enumerate(["gen_1.mp4", "lying.avi"])))
    r = cli(["compress", "--manifest", str(manifest), "-o", str(tmp_path / "c"), "--model", str(ckpt), *BASE])
    assert r.exit_code == 0, r.output
    cache = TokenCache(tmp_path / "c")
    labels = {vid: cache[vid].meta["extra"]["label"] for vid in cache.ids()}
    assert sorted(labels.values()) == ["L0", "L1"]


# ------------------------------------------------------------------------------------ failures

def test_broken_files_are_reported_and_the_batch_goes_on(ckpt, videos, broken, tmp_path):
    out = tmp_path / "cache"
    r = cli(["compress", str(videos / "clip_a.mp4"), str(videos / "nocount.mkv"), str(broken), "-o", str(out),
             "--model", str(ckpt), "--jsonl", *BASE[:-1]])
    assert r.exit_code == 1
    events = {e["id"]: e for e in events_of(r.stdout)}  # stdout holds JSON lines only
    assert {k: v["status"] for k, v in events.items() if v["status"] == "ok"} == {"clip_a.mp4": "ok", "nocount.mkv": "ok"}
    bad = {"truncated.mp4", "random.mp4", "empty.mp4", "notes.mp4"}
    assert {k for k, v in events.items() if v["status"] == "decode_error"} == bad
    for name in bad:
        assert events[name]["error"].startswith(str(broken / name)) and "\n" not in events[name]["error"]
    cache = TokenCache(out)
    assert sorted(cache.ids()) == ["clip_a.mp4", "nocount.mkv"]
    assert {row["id"]: row["status"] for row in cache.failures()} == {n: "decode_error" for n in bad}
    logged = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(row["id"] for row in logged) == sorted(bad)
    assert "2 done, 0 skipped, 4 failed" in r.stderr and "failures.jsonl" in r.stderr
    assert all(line.count("failed (") <= 1 for line in r.stderr.splitlines())


def test_hanging_decoder_is_stopped_by_the_watchdog(ckpt, videos, tmp_path):
    """open() of a named pipe blocks forever inside the decoder: the worker is killed after the
    timeout and the batch finishes the other videos. (The command line refuses named pipes up
    front, so the library is driven directly here.)"""
    fifo = tmp_path / "stuck.mp4"
    os.mkfifo(fifo)
    out = tmp_path / "cache"
    # 8 s without progress: far beyond what the good videos need even on a loaded machine (a worker
    # that starts slowly must not be taken for a hung one), and the only wait the hang costs
    cfg = RunConfig(decode=DecodeConfig(frames=4, timeout=8), model=ModelConfig(model=str(ckpt), dtype="fp32"))
    items = [VideoInput(fifo, "stuck.mp4"), VideoInput(videos / "gen_1.mp4", "gen_1.mp4"),
             VideoInput(videos / "clip_b.mp4", "clip_b.mp4")]
    events: List[dict] = []
    t0 = time.monotonic()
    summary = run_batch(items, out, cfg, decode_workers=1, on_event=events.append)
    elapsed = time.monotonic() - t0
    by_id = {e["id"]: e for e in events}
    assert by_id["stuck.mp4"]["status"] == "timeout"
    assert "no progress for 8 s (decode timeout)" in by_id["stuck.mp4"]["error"]
    assert by_id["gen_1.mp4"]["status"] == by_id["clip_b.mp4"]["status"] == "ok"
    assert summary.failed == 1 and summary.done == 2
    assert elapsed < 120  # a generous bound: the hang itself would never end
    assert TokenCache(out).failures()[0]["status"] == "timeout"


def test_a_decoder_process_that_dies_is_reported_and_replaced(videos, tmp_path):
    fifo = tmp_path / "held.mp4"
    os.mkfifo(fifo)
    cfg = DecodeConfig(frames=4, timeout=600)
    jobs = [DecodeJob(str(fifo), cfg, 4), DecodeJob(str(videos / "gen_1.mp4"), cfg, 4)]
    with DecodePool(1, timeout=600) as pool:
        pool.submit(jobs)
        assert not pool.wait(0.5)  # hands the first job out; the worker blocks opening the pipe
        writer = os.open(fifo, os.O_WRONLY)  # returns once the worker has opened the pipe
        try:
            assert not pool.ready()
            os.kill(pool._pool[0].process.pid, signal.SIGKILL)  # as a segfault or the OOM killer would
            died = pool.next()
        finally:
            os.close(writer)
        ok = pool.next()
    assert died.status == "crashed" and "killed by signal 9" in died.error and died.error.startswith(str(fifo))
    assert ok.status == "ok" and tuple(ok.decoded.frames.shape) == (4, 48, 64, 3)
    assert ok.sha256 == hash_file(str(videos / "gen_1.mp4"), progress=lambda: None) == file_sha256(videos / "gen_1.mp4")
    assert pool.replaced == 1


def test_unwritable_output_and_write_failure_mid_run(ckpt, videos, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = cli(["compress", str(videos / "gen_1.mp4"), str(videos / "gen_2.mp4"), "-o", str(blocker / "cache"),
             "--model", str(ckpt), *BASE])
    assert r.exit_code == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("aot: error")]
    assert len(lines) == 1 and str(blocker) in lines[0]
    # no file may grow past 16000 bytes: the first shard fits, the index part soon does not
    out = tmp_path / "cache"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16000, hard))
    try:
        r = cli(["compress", str(videos), "-o", str(out), "--model", str(ckpt), "--flush-every", "0", "--jsonl", *BASE])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert r.exit_code == 2
    err = [line for line in r.stderr.splitlines() if line.startswith("aot: error")]
    assert len(err) == 1 and "File too large" in err[0] and str(out) in err[0]
    committed = [e["id"] for e in events_of(r.stdout) if e["status"] == "ok"]
    assert 1 <= len(committed) < len(good_ids(videos))
    assert sorted(TokenCache(out).ids()) == sorted(committed)  # what was reported is kept, and loads
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_part_in_use_is_refused_naming_its_writer(ckpt, videos, tmp_path):
    out = tmp_path / "cache"
    args = ["compress", str(videos / "gen_1.mp4"), "-o", str(out), "--model", str(ckpt), *BASE, "--decode-workers", "0"]
    holder = CacheWriter(out, part="rank00000-of-00001")  # another run of the same rank, still running
    try:
        r = cli(args)
        assert r.exit_code == 2
        err = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(err) == 1 and "in use by another writer" in err[0], err
        assert f"pid {os.getpid()}" in err[0] and "--shard-id" in err[0]  # names the holder and the way out
        assert TokenCache(out).ids() == []  # nothing computed twice, nothing written
        assert [p.name for p in (out / "index").glob("*.jsonl")] == ["rank00000-of-00001.jsonl"]
    finally:
        holder.close()
    r = cli(args)  # once the other writer is done, the same command runs
    assert r.exit_code == 0, r.output
    assert TokenCache(out).ids() == ["gen_1.mp4"]
    assert [p.name for p in (out / "index").glob("*.jsonl")] == ["rank00000-of-00001.jsonl"]


# ------------------------------------------------------------------------------------ resume

def test_resume_skips_cached_retries_failed_and_overwrite_recomputes(ckpt, videos, broken, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(videos, data)
    shutil.copy(broken / "random.mp4", data / "zz_random.mp4")
    out = tmp_path / "cache"
    args = ["compress", str(data), "-o", str(out), "--model", str(ckpt), "--jsonl", *BASE]
    first = events_of(cli(args).stdout)
    ids = good_ids(videos)
    assert sorted(e["id"] for e in first if e["status"] == "ok") == ids
    again = cli(args)
    assert again.exit_code == 1  # the broken file is tried again and fails again
    status = {e["id"]: e["status"] for e in events_of(again.stdout)}
    assert status == {**{i: "skipped" for i in ids}, "zz_random.mp4": "decode_error"}
    # changed content under the same name is recomputed; so is everything with --overwrite
    shutil.copy(SAMPLES / "realshort.mp4", data / "gen_1.mp4")
    status = {e["id"]: e["status"] for e in events_of(cli(args).stdout)}
    assert status["gen_1.mp4"] == "ok" and status["clip_a.mp4"] == "skipped"
    assert TokenCache(out)["gen_1.mp4"].meta["video"]["size_bytes"] == (SAMPLES / "realshort.mp4").stat().st_size
    status = {e["id"]: e["status"] for e in events_of(cli(args + ["--overwrite"]).stdout)}
    assert [i for i in ids if status[i] != "ok"] == []
    assert sorted(TokenCache(out).ids()) == ids


def test_sigkill_midway_then_rerun_completes_exactly_once(ckpt, videos, tmp_path):
    """Killed right after its first commit (held there by the stage driver, so the kill lands
    midway however loaded the machine is), then run again."""
    out = tmp_path / "cache"
    control = tmp_path / "control"
    control.mkdir()
    args = ["compress", str(videos), "-o", str(out), "--model", str(ckpt), "--jsonl", "--flush-every", "0",
            "--shard-size", "1", "--frames", "8", "--dtype", "fp32", "--decode-workers", "1", "-q"]
    driver = [sys.executable, str(Path(__file__).resolve().parent / "stage_driver.py"), "committed", str(control),
              "--", *args]
    proc = subprocess.Popen(driver, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not (control / "reached").exists():  # held right after its first commit
            assert proc.poll() is None, "the run ended before it committed"
            assert time.monotonic() < deadline, "no commit within 300 s"
            select.select([], [], [], 0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed = TokenCache(out)  # loads right after the kill
    n_killed = len(killed)
    assert n_killed == 1 and killed.ids()[0] in good_ids(videos)
    rerun = cli(args)  # the same command, in this process (quicker)
    assert rerun.exit_code == 0, rerun.stderr[-2000:]
    status = Counter(e["status"] for e in events_of(rerun.stdout))
    assert status["skipped"] == n_killed and status["ok"] == len(good_ids(videos)) - n_killed
    assert_cache_sound(out, good_ids(videos))


# ------------------------------------------------------------------------------------ ranks

def test_rank_detection_and_partition():
    assert detect_rank(env={}) == RankInfo(0, 1, "single")
    assert detect_rank(4, 3, env={}) == RankInfo(3, 4, "explicit")
    assert detect_rank(env={"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == RankInfo(1, 2, "torchrun", 1)
    slurm = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "10",
             "SLURM_ARRAY_TASK_STEP": "2"}
    assert detect_rank(env=slurm) == RankInfo(1, 3, "slurm-array")
    both = detect_rank(env={**slurm, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (both.rank, both.world, both.source) == (3, 6, "slurm-array+torchrun")
    assert detect_rank(env={"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"}).source == "srun"
    with pytest.raises(ValueError, match="go together"):
        detect_rank(4, None, env={})
    with pytest.raises(ValueError, match="out of range"):
        detect_rank(env={"RANK": "2", "WORLD_SIZE": "2"})
    assert device_for_rank("auto", both, cuda_count=4) == "cuda:1"
    assert device_for_rank("auto", both, cuda_count=0) == "auto"
    assert device_for_rank("cpu", both, cuda_count=4) == "cpu"
    ids = [f"v{i}.mp4" for i in range(200)]
    parts = [set(take_share(ids, RankInfo(r, 3, "explicit"), key=lambda x: x)) for r in range(3)]
    assert set.union(*parts) == set(ids) and sum(map(len, parts)) == len(ids) and min(map(len, parts)) > 40
    assert all(owner(i, 3) == owner(i, 3) for i in ids)


def test_two_ranks_split_one_input_set(ckpt, videos, tmp_path):
    out = tmp_path / "cache"
    args = aot_command(str(videos), "-o", str(out), "--model", str(ckpt), "--jsonl", "--frames", "4", "--dtype",
                       "fp32", "--decode-workers", "0", "-q")  # in-process decoding: quicker to start
    procs = []
    for rank in (0, 1):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                      cwd=tmp_path))
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outputs]
    by_rank = [{e["id"] for e in events_of(o[0]) if e["status"] == "ok"} for o in outputs]
    assert by_rank[0] and by_rank[1] and not by_rank[0] & by_rank[1]
    assert by_rank[0] | by_rank[1] == set(good_ids(videos))
    rows = ok_rows(out)
    for rank, ids in enumerate(by_rank):
        assert {r["id"] for r in rows if r["part"].startswith(f"rank{rank:05d}-of-00002")} == ids
    assert_cache_sound(out, good_ids(videos))


# ------------------------------------------------------------------------------------ throughput

def test_a_writer_that_finished_before_the_lock_is_not_redone(ckpt, videos, tmp_path):
    """Two uncoordinated runs: the second planned before the first committed (nothing cached
    yet) and gets the part's lock after the first has finished. It computes nothing again."""
    from aot_cli.models.identity import model_identity
    from aot_cli.pipeline.resume import plan_resume
    from aot_cli.pipeline.runconfig import config_fingerprint

    cfg = RunConfig()
    cfg.decode = DecodeConfig(frames=4)
    cfg.model = ModelConfig(model=str(ckpt), dtype="fp32")
    items = expand_inputs([str(videos / "gen_1.mp4"), str(videos / "gen_2.mp4")])
    out = tmp_path / "cache"
    fingerprint = config_fingerprint(cfg, model_identity(cfg.model))
    stale = plan_resume(items, out, fingerprint)  # the second run's plan: nothing cached yet
    assert stale.todo == [0, 1] and stale.known == [None, None]
    first = run_batch(items, out, cfg, decode_workers=0, fingerprint=fingerprint)  # the first run
    assert first.done == 2
    loads: List[str] = []
    events: List[dict] = []
    second = run_batch(items, out, cfg, decode_workers=0, fingerprint=fingerprint, resume=stale,
                       load_adapter=lambda: loads.append("load"), on_event=events.append)
    assert (second.done, second.skipped, loads) == (0, 2, [])
    assert [e["status"] for e in events] == ["skipped", "skipped"]
    assert_cache_sound(out, ["gen_1.mp4", "gen_2.mp4"])


def test_a_model_that_fails_to_load_leaves_no_new_cache_behind(ckpt, videos, tmp_path):
    bad = tmp_path / "bad-model"
    shutil.copytree(ckpt, bad)
    weights = bad / "model.safetensors"
    with open(weights, "r+b") as handle:  # config.json is fine; the weights are cut short
        handle.truncate(weights.stat().st_size // 2)
    out = tmp_path / "new-cache"
    clips = [str(videos / "gen_1.mp4"), str(videos / "gen_2.mp4")]
    r = cli(["compress", *clips, "-o", str(out), "--model", str(bad), *BASE])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()  # the lock was taken (and the cache created) before the load: removed again
    # an existing cache is kept as it was
    assert cli(["compress", clips[0], "-o", str(out), "--model", str(ckpt), *BASE]).exit_code == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    r = cli(["compress", *clips, "-o", str(out), "--model", str(bad), *BASE])
    assert r.exit_code == 2
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert TokenCache(out).ids() == ["gen_1.mp4"]


def test_rerun_recomputes_videos_whose_shard_is_damaged(ckpt, videos, tmp_path):
    out = tmp_path / "cache"
    args = ["compress", str(videos / "gen_1.mp4"), str(videos / "gen_2.mp4"), "-o", str(out), "--model", str(ckpt),
            "--jsonl", *BASE]
    assert cli(args).exit_code == 0
    shards = sorted((out / "shards").glob("*.safetensors"))
    assert len(shards) == 1
    with open(shards[0], "r+b") as handle:  # cut off the end of the tensor data
        handle.truncate(shards[0].stat().st_size - 64)
    with pytest.raises(CacheError):
        TokenCache(out)["gen_1.mp4"].tokens
    r = cli(args)
    assert r.exit_code == 0, r.output
    assert sorted(e["status"] for e in events_of(r.stdout)) == ["ok", "ok"]  # not "nothing to do"
    cache = TokenCache(out)
    assert sorted(cache.ids()) == ["gen_1.mp4", "gen_2.mp4"] and cache["gen_1.mp4"].tokens.shape[0] > 0


def test_short_videos_share_tower_calls_and_match_single_runs(ckpt, videos, tmp_path):
    cfg = RunConfig()
    cfg.decode = DecodeConfig(frames=4)
    cfg.model = ModelConfig(model=str(ckpt), dtype="fp32", batch_frames=16)
    adapter = load_model(cfg.model)
    items = expand_inputs([str(videos)])
    assert len(items) == 10
    events: List[dict] = []
    summary = run_batch(items, tmp_path / "cache", cfg, adapter=adapter, decode_workers=0, on_event=events.append)
    assert summary.done == 10 and summary.frames == 40
    assert summary.tower_calls == 3  # 16 + 16 + 8 frames: four videos per call, then two
    cache = TokenCache(tmp_path / "cache")
    for item in items[:2] + items[-1:]:
        alone = compress_video(item.path, cfg, adapter=adapter, video_id=item.video_id)
        got = cache[item.video_id]
        assert torch.equal(got.kind, alone.tensors["kind"]) and torch.equal(got.index, alone.tensors["index"])
        torch.testing.assert_close(got.tokens, alone.tensors["tokens"], atol=1e-5, rtol=1e-4)
    # in worker processes the same videos give the same tokens
    summary2 = run_batch(items, tmp_path / "cache2", cfg, adapter=adapter, decode_workers=2)
    assert summary2.done == 10 and isinstance(summary2, Summary)
    other = TokenCache(tmp_path / "cache2")
    for vid in cache.ids():
        torch.testing.assert_close(other[vid].tokens, cache[vid].tokens, atol=1e-5, rtol=1e-4)


def test_progress_counts_finished_videos_and_commits_apart(ckpt, videos, tmp_path):
    from aot_cli.pipeline.progress import Reporter

    cfg = RunConfig()
    cfg.decode = DecodeConfig(frames=4)
    cfg.model = ModelConfig(model=str(ckpt), dtype="fp32", batch_frames=4)
    items = expand_inputs([str(videos)])[:3]
    timeline: List[tuple] = []
    reporter = Reporter(total=3, bar=True)

    def finished(e):
        reporter.finished(e)
        timeline.append((e["status"], reporter.progress.tasks[0].completed, reporter.committed))

    def event(e):
        reporter.event(e)
        timeline.append((e["status"], reporter.progress.tasks[0].completed, reporter.committed))

    with reporter:
        run_batch(items, tmp_path / "cache", cfg, decode_workers=0, flush_every=3600, on_event=event,
                  on_progress=finished)
        rate = reporter.progress.tasks[0].fields["rate"]
    # each video counts when it is computed; the one commit at the end is counted apart
    assert timeline == [("finished", 1, 0), ("finished", 2, 0), ("finished", 3, 0),
                        ("ok", 3, 1), ("ok", 3, 2), ("ok", 3, 3)]
    assert "videos/s" in rate and "frames/s" in rate and rate.endswith("3 committed")
    assert reporter.frames == 12


def test_wrong_and_missing_frame_counts_compress_correctly(ckpt, videos, tmp_path):
    out = tmp_path / "cache"
    names = ["lying.avi", "nocount.mkv", "nocount.webm"]
    r = cli(["compress", *[str(videos / n) for n in names], "-o", str(out), "--model", str(ckpt),
             "--frames", "6", "--dtype", "fp32", "--decode-workers", "1", "-q"])
    assert r.exit_code == 0, r.output
    cache = TokenCache(out)
    lying = cache["lying.avi"]
    assert lying.meta["video"]["num_frames_header"] == 100 and lying.meta["video"]["num_frames"] == 20
    assert lying["frame_indices"].tolist() == [0, 3, 7, 11, 15, 19]
    for name in ("nocount.mkv", "nocount.webm"):
        v = cache[name]
        assert v.meta["video"]["num_frames_header"] is None and v.meta["video"]["num_frames"] == 15
        assert v["frame_indices"].tolist() == [0, 2, 5, 8, 11, 14]
    for v in (cache[n] for n in names):
        assert v.meta["counts"]["frames"] == 6 and v.meta["counts"]["achieved"] == v.meta["counts"]["planned"]
