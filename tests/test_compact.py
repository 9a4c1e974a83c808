"""`aot compact` and the storage report: every video reads back bit-identical, superseded and
orphaned bytes are freed, and the cache stays whole whatever stops a compaction, whoever reads it
meanwhile and whichever writer holds it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from aot_cli.cache import CacheError, CacheWriter, PartInUseError, TokenCache
from aot_cli.cache.compact import KEEP_SHARE, cache_storage, compact, plan_compaction
from cachefiles import video_meta, video_tensors

REPO = Path(__file__).resolve().parents[1]


def build(directory: Path) -> Path:
    """A cache with everything compaction frees: videos stored again (in another part and in a
    later run of the same part), failures later cached or failed again, one video per shard, an
    orphan shard, and bytes appended to a shard but never committed."""
    for part, generation, count in (("r0", 0, 6), ("r1", 1, 3), ("r0", 2, 2)):
        with CacheWriter(directory, part=part, shard_size=1) as writer:
            for k in range(count):
                writer.add(f"clips/v{k}.mp4", video_tensors(k + 10 * generation), video_meta(k + 10 * generation))
            writer.add_failure("broken.mp4", "/nowhere/broken.mp4", "decode_error", f"attempt {generation}")
            writer.add_failure(f"later-ok-{part}.mp4", "/nowhere/x.mp4", "timeout", "slow")
    with CacheWriter(directory, part="r2") as writer:  # appends: one shard of two segments
        writer.add("later-ok-r0.mp4", video_tensors(7), video_meta(7))
        writer.flush()
        writer.add("extra.mp4", video_tensors(8), video_meta(8))
    (directory / "shards" / "r2-00009-0badf00d.safetensors").write_bytes(b"orphan: no row names it")
    (shard,) = [p for p in (directory / "shards").iterdir() if p.name.startswith("r2-0000")
                and not p.name.startswith("r2-00009")]
    with open(shard, "ab") as f:
        f.write(b"\x00" * 24 + b"appended, never committed")
    return directory


def snapshot(directory: Path) -> Dict[str, object]:
    """Everything a reader gets: every video's tensors and meta, and the failure rows."""
    cache = TokenCache(directory)
    videos = {vid: ({n: t.clone() for n, t in cache[vid].tensors().items()}, cache[vid].meta) for vid in cache.ids()}
    failures = sorted((r["id"], r["status"], r["error"]) for r in cache.failures())
    return {"videos": videos, "failures": failures, "problems": cache.problems()}


def assert_same(directory: Path, expected: Dict[str, object]) -> None:
    got = snapshot(directory)
    assert sorted(got["videos"]) == sorted(expected["videos"])
    for vid, (tensors, meta) in expected["videos"].items():
        got_tensors, got_meta = got["videos"][vid]
        assert got_meta == meta
        assert sorted(got_tensors) == sorted(tensors)
        for name, tensor in tensors.items():
            assert got_tensors[name].dtype == tensor.dtype and got_tensors[name].shape == tensor.shape
            assert torch.equal(raw(got_tensors[name]), raw(tensor)), (vid, name)  # bit-identical
    assert got["failures"] == expected["failures"]
    assert got["problems"] == []


def raw(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes (so that equal means bit-identical, NaN and -0.0 included)."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def shard_files(directory: Path) -> List[str]:
    return sorted(p.name for p in (directory / "shards").iterdir())


def test_compact_keeps_every_video_bit_identical_and_frees_the_rest(tmp_path: Path) -> None:
    directory = build(tmp_path / "c")
    expected = snapshot(directory)
    before = cache_storage(TokenCache(directory))
    assert before.shard_files == len(shard_files(directory)) == 13  # r0: 6 + 2, r1: 3, r2: 1 + an orphan
    assert before.reclaimable_bytes > 0 and before.superseded_rows > 0 and before.unnamed_files == 1
    assert before.live_videos == len(expected["videos"]) == 8
    assert sorted(expected["failures"]) == [("broken.mp4", "decode_error", "attempt 2"),
                                            ("later-ok-r1.mp4", "timeout", "slow")]
    report = compact(directory, shard_size=12_000)
    assert report.done and report.videos == 8 and report.before == before
    assert_same(directory, expected)
    after = cache_storage(TokenCache(directory))
    assert after.reclaimable_bytes == 0 and after.superseded_rows == 0 and after.unnamed_files == 0
    assert after.live_bytes == after.shard_bytes < before.shard_bytes
    files = shard_files(directory)
    assert len(files) < before.shard_files and all(name.startswith("compact-") for name in files)
    sizes = sorted((directory / "shards" / n).stat().st_size for n in files)
    assert all(size >= 12_000 for size in sizes[1:])  # full shards, one partial at most
    assert sorted(p.name for p in (directory / "index").iterdir() if not p.name.startswith(".")) == \
        [files[0].rsplit("-", 2)[0] + ".jsonl"]
    # nothing left to gain: a second compaction changes nothing
    again = compact(directory, shard_size=12_000)
    assert not again.done and shard_files(directory) == files
    # ... and says so: nothing copied, linked, removed or dropped (not what a dry run would do)
    assert (again.videos, again.shards_written, again.shards_linked, again.files_removed, again.rows_dropped,
            again.parts) == (0, 0, 0, 0, 0, [])
    # writers go on as before, in their own parts, next to the compacted one
    with CacheWriter(directory, part="r0") as writer:
        writer.add("new.mp4", video_tensors(99), video_meta(99))
    assert torch.equal(TokenCache(directory)["new.mp4"].tokens, video_tensors(99)["tokens"])


def test_full_shards_of_live_bytes_are_linked_not_copied(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with CacheWriter(directory, part="r0", shard_size=9_000) as writer:
        for k in range(5):
            writer.add(f"v{k}", video_tensors(k), video_meta(k))
            writer.flush()  # one segment per video, appended until the shard is full
    full = [p for p in (directory / "shards").iterdir() if p.stat().st_size >= KEEP_SHARE * 9_000]
    assert len(full) == 2 and max(p.stat().st_size for p in full) >= 9_000
    inodes = {p.stat().st_ino for p in full}
    with CacheWriter(directory, part="r1", shard_size=1) as writer:  # supersede nothing, add a small shard
        writer.add("w", video_tensors(20), video_meta(20))
    expected = snapshot(directory)
    report = compact(directory, shard_size=9_000)
    assert report.shards_linked == len(full) and report.shards_written == 1
    assert inodes <= {p.stat().st_ino for p in (directory / "shards").iterdir()}  # same bytes, new name
    assert_same(directory, expected)


def test_parts_that_cannot_be_read_whole_are_left_as_they_are(tmp_path: Path) -> None:
    directory = build(tmp_path / "c")
    with open(directory / "index" / "r1.jsonl", "ab") as f:
        f.write(b'{"id": "torn", "status": "ok", "shar\n')
    expected = snapshot(directory)
    r1_files = [n for n in shard_files(directory) if n.startswith("r1-")]
    report = compact(directory, shard_size=1 << 20)
    assert list(report.left) == ["r1"] and "not rows" in report.left["r1"]
    assert [n for n in shard_files(directory) if n.startswith("r1-")] == r1_files
    got = snapshot(directory)
    got["problems"], expected["problems"] = [], []
    assert sorted(got["videos"]) == sorted(expected["videos"])
    for vid in expected["videos"]:
        assert torch.equal(got["videos"][vid][0]["tokens"], expected["videos"][vid][0]["tokens"])


STOP_CHILD = r"""
import os, signal, sys
from aot_cli.cache.compact import compact
directory, stop = sys.argv[1], sys.argv[2]
seen = []
def step(name):
    seen.append(name)
    if stop == "list":
        print(name, flush=True)
    elif name == stop:
        os.kill(os.getpid(), signal.SIGKILL)
compact(directory, shard_size=12_000, on_step=step)
"""


def run_python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=300, **kwargs)


def test_sigkill_at_every_step_loses_nothing_and_a_rerun_finishes(tmp_path: Path) -> None:
    pristine = build(tmp_path / "pristine")
    expected = snapshot(pristine)
    listing = run_python(STOP_CHILD, str(shutil.copytree(pristine, tmp_path / "listing")), "list")
    assert listing.returncode == 0, listing.stderr
    steps = listing.stdout.split("\n")[:-1]
    assert steps[:2] == ["locked", "swept"] and "index" in steps and len(steps) > 8
    for number, stop in enumerate(steps):
        directory = shutil.copytree(pristine, tmp_path / f"stop{number}")
        child = run_python(STOP_CHILD, str(directory), stop)
        assert child.returncode == -signal.SIGKILL, (stop, child.stderr)
        assert_same(directory, expected)  # readers see every video, bit-identical, at every step
        with CacheWriter(directory, part="r0"):  # a writer reopening its part sweeps, loses nothing
            pass
        assert_same(directory, expected)
        report = compact(directory, shard_size=12_000)  # the rerun takes over the killed one's locks
        assert_same(directory, expected)
        after = cache_storage(TokenCache(directory))
        assert after.reclaimable_bytes == 0 and after.unnamed_files == 0, (stop, report)
        assert all(name.startswith("compact-") for name in shard_files(directory)), stop


def test_a_reader_open_during_compaction_reads_the_same_tokens(tmp_path: Path) -> None:
    directory = build(tmp_path / "c")
    expected = snapshot(directory)
    reader = TokenCache(directory)
    held = reader["clips/v0.mp4"]  # its shard is open: it stays readable after it is removed
    compact(directory, shard_size=12_000)
    assert not (directory / "shards" / held.path.name).exists()
    assert torch.equal(held.tokens, expected["videos"]["clips/v0.mp4"][0]["tokens"])
    for vid, (tensors, meta) in expected["videos"].items():  # rows read before: followed to the new shards
        video = reader[vid]
        assert video.meta == meta and torch.equal(video.tokens, tensors["tokens"])


HOLD_CHILD = r"""
import sys
from aot_cli.cache import CacheWriter
with CacheWriter(sys.argv[1], part="r1"):
    print("holding", flush=True)
    sys.stdin.readline()
"""

PAUSE_CHILD = r"""
import sys
from aot_cli.cache.compact import compact
def step(name):
    if name == "locked":
        print("locked", flush=True)
        sys.stdin.readline()
compact(sys.argv[1], shard_size=12_000, on_step=step)
print("done", flush=True)
"""


def start_python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_writers_and_compaction_exclude_each_other(tmp_path: Path) -> None:
    directory = build(tmp_path / "c")
    expected = snapshot(directory)
    files = shard_files(directory)
    holder = start_python(HOLD_CHILD, str(directory))
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(PartInUseError, match=r"part 'r1' is in use by a writer \(pid"):
            compact(directory, shard_size=12_000)
        assert shard_files(directory) == files  # refused before anything changed
        result = subprocess.run([sys.executable, "-m", "aot_cli.cli", "compact", str(directory)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert result.stderr.startswith("aot: error: ") and "in use by a writer" in result.stderr
    finally:
        holder.communicate("go\n", timeout=300)
    compactor = start_python(PAUSE_CHILD, str(directory))
    try:
        assert compactor.stdout.readline().strip() == "locked"
        with pytest.raises(PartInUseError, match="in use by another writer .*aot compact, pid"):
            CacheWriter(directory, part="r0")
        with pytest.raises(PartInUseError, match="another aot compact is running"):
            compact(directory, shard_size=12_000)
        out, err = compactor.communicate("go\n", timeout=300)
        assert compactor.returncode == 0 and "done" in out, err
    finally:
        if compactor.poll() is None:
            compactor.kill()
            compactor.communicate()
    assert_same(directory, expected)


def test_cli_compact_dry_run_json_and_errors(tmp_path: Path) -> None:
    directory = build(tmp_path / "c")
    files = shard_files(directory)

    def aot(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "aot_cli.cli", *args], capture_output=True, text=True,
                              timeout=300)

    dry = aot("compact", str(directory), "--dry-run", "--json")
    assert dry.returncode == 0 and shard_files(directory) == files
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["before"]["reclaimable_bytes"] > 0 and report["files_removed"] == len(files)
    assert "nothing changed" in dry.stderr
    for args, named in ((["--shard-size", "0"], "--shard-size"), (["--shard-size", "lots"], "--shard-size")):
        bad = aot("compact", str(directory), *args)
        assert bad.returncode == 2 and bad.stderr.startswith(f"aot: error: {named}") and bad.stderr.count("\n") == 1
    single = tmp_path / "one.safetensors"
    from cachefiles import single_file

    single_file(single)
    for target in (single, tmp_path / "nowhere", tmp_path):
        bad = aot("compact", str(target))
        assert bad.returncode == 2 and bad.stderr.startswith("aot: error: ") and bad.stderr.count("\n") == 1
    done = aot("compact", str(directory), "--shard-size", "12kB")
    assert done.returncode == 0 and done.stderr.startswith("compacted ") and done.stderr.count("\n") == 1
    assert len(shard_files(directory)) < len(files)
    # aot inspect says how much is live and how much aot compact would free
    table = aot("inspect", str(directory))
    assert table.returncode == 0 and " 0 B reclaimable" in table.stdout and "frees it" not in table.stdout
    inspected = json.loads(aot("inspect", str(build(tmp_path / "again")), "--json").stdout)
    storage = inspected["storage"]
    assert storage["reclaimable_bytes"] > 0 and storage["live_bytes"] + storage["reclaimable_bytes"] == \
        storage["shard_bytes"]


def test_plan_is_read_only_and_reports_what_compact_frees(tmp_path: Path) -> None:
    directory = build(tmp_path / "c")
    files = shard_files(directory)
    plan = plan_compaction(TokenCache(directory), 12_000)
    assert plan.worth_it() and plan.parts == ["r0", "r1", "r2"] and shard_files(directory) == files
    before = plan.storage.shard_bytes
    compact(directory, shard_size=12_000)
    after = cache_storage(TokenCache(directory))
    assert before - after.shard_bytes >= plan.storage.reclaimable_bytes - 1024  # headers of the new shards
    from cachefiles import single_file

    with pytest.raises(CacheError, match="nothing to compact"):
        plan_compaction(TokenCache(single_file(tmp_path / "one.safetensors")))
