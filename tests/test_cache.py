"""Tests of the token cache (aot_cli/cache): format round trips, sharding, merged index parts,
damaged and foreign files, lazy reads, crash safety, concurrent writers and full disks."""
from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from aot_cli.cache import (FORMAT_VERSION, SINGLE_FORMAT_VERSION, CacheError, CachedVideo, CacheWriter, TokenCache,
                           UnknownTensorError, UnknownVideoError, atomic_write_bytes, write_single)
from aot_cli.cache import atomic
from aot_cli.cache.reader import ShardFile

REPO = Path(__file__).resolve().parent.parent


def make_tensors(seed: int, num_tokens: int = 12, dim: int = 8,
                 dtype: torch.dtype = torch.bfloat16) -> Dict[str, torch.Tensor]:
    """The tensors the pipeline hands the cache for one video (small, seeded)."""
    g = torch.Generator().manual_seed(seed)
    frames = 4
    return {
        "tokens": torch.randn(num_tokens, dim, generator=g).to(dtype),
        "frame": torch.randint(0, frames, (num_tokens,), generator=g, dtype=torch.int32),
        "index": torch.randint(0, 196, (num_tokens,), generator=g, dtype=torch.int32),
        "kind": torch.randint(0, 3, (num_tokens,), generator=g, dtype=torch.uint8),
        "frame_indices": torch.arange(frames, dtype=torch.int64) * 7,
        "timestamps": torch.rand(frames, generator=g, dtype=torch.float64),
        "anchors_per_frame": torch.full((frames,), 3, dtype=torch.int32),
        "kept_per_frame": torch.randint(0, 5, (frames,), generator=g, dtype=torch.int32),
        "segments": torch.tensor([[0, 2], [2, 4]], dtype=torch.int32),
    }


def make_meta(seed: int) -> dict:
    return {"video": {"path": f"/data/{seed}.mp4", "sha256": f"{seed:064x}"},
            "config_fingerprint": "fp-1", "counts": {"seed": seed}, "name": "vidéo ü"}


def assert_same_tensors(video: CachedVideo, expected: Dict[str, torch.Tensor]) -> None:
    assert sorted(video.names) == sorted(expected)
    for name, tensor in expected.items():
        got = video[name]
        assert got.dtype == tensor.dtype, name
        assert torch.equal(got, tensor), name


def run_child(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def index_lines(cache_dir: Path) -> list:
    rows = []
    for part in sorted((cache_dir / "index").glob("*.jsonl")):
        for line in part.read_bytes().split(b"\n"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


# -- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_round_trip_preserves_dtypes_ids_and_meta(tmp_path: Path, dtype: torch.dtype) -> None:
    ids = ["plain", "a/b/c.mp4", "../dots/./x", "ünïcødé/視頻", "v0.tokens", "with space\nand newline"]
    expected = {vid: make_tensors(k, num_tokens=5 + k, dtype=dtype) for k, vid in enumerate(ids)}
    with CacheWriter(tmp_path / "c") as writer:
        for k, vid in enumerate(ids):
            writer.add(vid, expected[vid], make_meta(k))
    cache = TokenCache(tmp_path / "c")
    assert cache.ids() == ids and len(cache) == len(ids)
    for k, vid in enumerate(ids):
        assert vid in cache
        video = cache[vid]
        assert video.id == vid
        assert_same_tensors(video, expected[vid])
        assert video.tokens.dtype == dtype and video.tokens.shape == (5 + k, 8)
        assert video.frame.dtype == torch.int32 and video.kind.dtype == torch.uint8
        assert video.meta == make_meta(k)
        row = cache.lookup(vid)
        assert row["status"] == "ok" and row["num_tokens"] == 5 + k
        assert row["sha256"] == f"{k:064x}" and row["config_fingerprint"] == "fp-1"
    assert "missing" not in cache


def test_write_single_is_a_one_video_cache_in_the_shard_format(tmp_path: Path) -> None:
    tensors = make_tensors(3)
    path = write_single(tmp_path / "out" / "clip.safetensors", "dir/clip ü", tensors, make_meta(3))
    cache = TokenCache(path)
    assert cache.ids() == ["dir/clip ü"] and not cache.is_directory
    assert_same_tensors(cache["dir/clip ü"], tensors)
    assert cache.entries()[0]["sha256"] == f"{3:064x}"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert set(f.keys()) == {f"v0.{n}" for n in tensors}
    # a single-video file is still format 1 (its layout did not change): older readers read it
    assert meta["aot_format"] == str(SINGLE_FORMAT_VERSION) == "1" and meta["aot_kind"] == "single"
    assert json.loads(meta["aot_videos"]) == {"v0": {"id": "dir/clip ü", "meta": make_meta(3)}}
    assert [p.name for p in path.parent.iterdir()] == ["clip.safetensors"]  # no temp left


def test_lone_shard_file_reads_as_a_cache(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c") as writer:
        for k in range(3):
            writer.add(f"id{k}", make_tensors(k), {})
    (shard,) = (tmp_path / "c" / "shards").iterdir()
    cache = TokenCache(shard)
    assert cache.ids() == ["id0", "id1", "id2"]
    assert_same_tensors(cache["id2"], make_tensors(2))


def test_shard_rollover_at_shard_size(tmp_path: Path) -> None:
    one = make_tensors(0, num_tokens=50, dim=16, dtype=torch.float32)
    video_bytes = sum(t.numel() * t.element_size() for t in one.values()) + 2  # + "{}"
    with CacheWriter(tmp_path / "c", shard_size=3 * video_bytes) as writer:
        for k in range(8):
            writer.add(f"v{k}", make_tensors(k, num_tokens=50, dim=16, dtype=torch.float32), {})
        assert writer.stats["shards"] == 2 and writer.stats["buffered_videos"] == 2
    assert writer.stats["shards"] == 3 and writer.stats["videos"] == 8
    shards = sorted((tmp_path / "c" / "shards").iterdir())
    assert len(shards) == 3
    assert writer.stats["bytes"] == sum(p.stat().st_size for p in shards)
    cache = TokenCache(tmp_path / "c")
    per_shard: Dict[str, list] = {}
    for row in cache.entries():
        per_shard.setdefault(row["shard"], []).append(row["id"])
    assert sorted(len(v) for v in per_shard.values()) == [2, 3, 3]
    for k in range(8):
        assert_same_tensors(cache[f"v{k}"], make_tensors(k, num_tokens=50, dim=16, dtype=torch.float32))


def test_frequent_commits_fill_shards_to_the_shard_size(tmp_path: Path) -> None:
    one = make_tensors(0, num_tokens=50, dim=16, dtype=torch.float32)
    video_bytes = sum(t.numel() * t.element_size() for t in one.values())
    with CacheWriter(tmp_path / "c", shard_size=10 * video_bytes) as writer:
        for k in range(34):
            writer.add(f"v{k}", make_tensors(k, num_tokens=50, dim=16, dtype=torch.float32), {"k": k})
            writer.flush()  # a commit per video, as a slow run with --flush-every does
    assert writer.stats["segments"] == 34 and writer.stats["shards"] == 4
    shards = sorted((tmp_path / "c" / "shards").iterdir())
    sizes = [p.stat().st_size for p in shards]
    assert len(shards) == 4 and all(size >= 10 * video_bytes for size in sizes[:-1])
    assert all(size < 12 * video_bytes for size in sizes)  # closed at about the shard size
    cache = TokenCache(tmp_path / "c")
    rows = cache.entries()
    assert len({(r["shard"], r["offset"]) for r in rows}) == 34  # one segment per commit
    assert all(r["offset"] % 8 == 0 for r in rows)
    for k in range(34):
        assert_same_tensors(cache[f"v{k}"], make_tensors(k, num_tokens=50, dim=16, dtype=torch.float32))
    alone = TokenCache(shards[0])  # a shard read on its own: all of its segments
    assert alone.ids() == [f"v{k}" for k in range(len(alone))] and len(alone) >= 8
    assert_same_tensors(alone["v3"], make_tensors(3, num_tokens=50, dim=16, dtype=torch.float32))


def test_format_1_caches_are_read_and_raised_to_format_2_by_a_writer(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with CacheWriter(directory, shard_size=1) as writer:
        for k in range(3):
            writer.add(f"id{k}", make_tensors(k), {})
    # what aot wrote before segments: no offsets in the rows, version 1 everywhere
    part = directory / "index" / "r0.jsonl"
    rows = [json.loads(line) for line in part.read_text().splitlines()]
    part.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "offset"}) + "\n" for row in rows))
    manifest = json.loads((directory / "cache.json").read_text())
    (directory / "cache.json").write_text(json.dumps({**manifest, "format_version": 1}))
    cache = TokenCache(directory)
    assert cache.ids() == ["id0", "id1", "id2"] and cache.lookup("id1").get("offset") is None
    assert_same_tensors(cache["id1"], make_tensors(1))
    with CacheWriter(directory) as writer:
        writer.add("id3", make_tensors(3), {})
    upgraded = json.loads((directory / "cache.json").read_text())
    assert upgraded["format_version"] == FORMAT_VERSION == 2 and upgraded["created_at"] == manifest["created_at"]
    assert sorted(TokenCache(directory).ids()) == ["id0", "id1", "id2", "id3"]
    # rows with an offset that cannot be a segment's start are skipped, not followed
    with open(part, "a") as f:
        for bad in (-8, 3, True, "8"):
            f.write(json.dumps({**rows[0], "id": f"bad{bad}", "offset": bad}) + "\n")
    cache = TokenCache(directory)
    assert cache.skipped_lines == 4 and not [i for i in cache.ids() if i.startswith("bad")]


def test_flush_interval_commits_without_waiting_for_shard_size(tmp_path: Path, monkeypatch) -> None:
    from aot_cli.cache import writer as writer_module

    clock = [1000.0]  # the writer's clock, moved by hand: no sleeping, no dependence on load
    monkeypatch.setattr(writer_module.time, "monotonic", lambda: clock[0])
    with CacheWriter(tmp_path / "c", flush_interval=0.05) as writer:
        writer.add("first", make_tensors(1), {})
        clock[0] += 0.049
        writer.add("first", make_tensors(1), {})  # the same id again, still within the interval
        assert writer.stats["shards"] == 0
        clock[0] += 0.002
        writer.add("second", make_tensors(2), {})
        assert writer.stats["shards"] == 1 and writer.stats["buffered_videos"] == 0
        assert TokenCache(tmp_path / "c").ids() == ["first", "second"]  # readable before close


def test_parts_are_merged_and_the_latest_row_wins(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c", part="rank0") as w0:
        w0.add("shared", make_tensors(1), {"v": 1})
        w0.add("only0", make_tensors(2), {})
    with CacheWriter(tmp_path / "c", part="rank1") as w1:
        w1.add("shared", make_tensors(3), {"v": 3})
        w1.add("only1", make_tensors(4), {})
    with CacheWriter(tmp_path / "c", part="rank0") as w0:  # resume the first part
        w0.add("twice", make_tensors(5), {"v": 5})
        w0.add("twice", make_tensors(6), {"v": 6})  # replaces the buffered one
    assert sorted(p.name for p in (tmp_path / "c" / "index").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    cache = TokenCache(tmp_path / "c")
    assert sorted(cache.ids()) == ["only0", "only1", "shared", "twice"]
    assert cache["shared"].meta == {"v": 3}
    assert_same_tensors(cache["shared"], make_tensors(3))
    assert_same_tensors(cache["twice"], make_tensors(6))
    assert [r["id"] for r in index_lines(tmp_path / "c")].count("twice") == 1


def test_failures_and_lookup(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c") as writer:
        writer.add_failure("broken", "/v/broken.mp4", "decode_error", ValueError("bad\nframe"),
                           meta={"sha256": "ab"})
        writer.add_failure("retried", "/v/retried.mp4", "timeout", "hung")
        writer.add("was_ok", make_tensors(1), make_meta(1))
        writer.flush()
        writer.add("retried", make_tensors(2), make_meta(2))
        writer.flush()
        writer.add_failure("was_ok", "/v/was_ok.mp4", "decode_error", "changed on disk")
        assert writer.stats["failures"] == 3
    cache = TokenCache(tmp_path / "c")
    assert sorted(cache.ids()) == ["retried", "was_ok"]
    failures = {r["id"]: r for r in cache.failures()}
    assert sorted(failures) == ["broken", "was_ok"]
    assert failures["broken"]["error"] == "bad frame" and failures["broken"]["sha256"] == "ab"
    assert failures["broken"]["path"] == "/v/broken.mp4" and failures["broken"]["status"] == "decode_error"
    assert cache.lookup("broken")["status"] == "decode_error"
    assert cache.lookup("was_ok")["status"] == "ok"  # still cached and readable
    assert cache.lookup("nothing") is None
    log = [json.loads(line) for line in (tmp_path / "c" / "failures.jsonl").read_text().splitlines()]
    assert [r["id"] for r in log] == ["broken", "retried", "was_ok"]
    with pytest.raises(UnknownVideoError, match="broken.*failed.*decode_error"):
        cache["broken"]
    with pytest.raises(ValueError):
        CacheWriter(tmp_path / "d").add_failure("x", "x.mp4", "ok", "not a failure")


def test_unknown_ids_and_tensor_names_raise_key_errors(tmp_path: Path) -> None:
    write_single(tmp_path / "one.safetensors", "a", make_tensors(0), {})
    cache = TokenCache(tmp_path / "one.safetensors")
    with pytest.raises(KeyError) as info:
        cache["b"]
    assert isinstance(info.value, UnknownVideoError)
    message = str(info.value)
    assert "one.safetensors" in message and "'b'" in message and "ids: 'a'" in message
    assert "\n" not in message
    with pytest.raises(UnknownTensorError, match="no tensor 'logits'"):
        cache["a"]["logits"]
    assert cache["a"].tensors(["kind"]).keys() == {"kind"}


def test_find_takes_an_id_or_its_unique_file_name(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c") as writer:
        for i, vid in enumerate(["a/bikes.mp4", "b/bikes.mp4", "clips/motion.mov", "motion.mov.bak"]):
            writer.add(vid, make_tensors(i), {})
    cache = TokenCache(tmp_path / "c")
    assert cache.find("a/bikes.mp4") == "a/bikes.mp4"
    assert cache.find("motion.mov") == "clips/motion.mov"
    assert cache.find("bikes.mp4") is None  # two candidates: ambiguous
    assert cache.find("ov") is None and cache.find("nothing.mp4") is None
    # resolve: find's answer, else one line that says why and names some ids
    assert cache.resolve("motion.mov") == "clips/motion.mov" and cache.resolve("a/bikes.mp4") == "a/bikes.mp4"
    with pytest.raises(UnknownVideoError, match=r"'bikes.mp4' could mean 2 videos \('a/bikes.mp4', 'b/bikes.mp4'\)"):
        cache.resolve("bikes.mp4")
    with pytest.raises(UnknownVideoError, match=r"no video with id 'nothing.mp4' \(4 cached, ids: 'a/bikes.mp4'"):
        cache.resolve("nothing.mp4")
    with pytest.raises(UnknownVideoError, match="holds 4 videos; choose one with --video"):
        cache.resolve(None)
    write_single(tmp_path / "one.safetensors", "clips/only.mp4", make_tensors(0), {})
    assert TokenCache(tmp_path / "one.safetensors").resolve(None) == "clips/only.mp4"


# -- damaged and foreign inputs ---------------------------------------------------------------

def test_foreign_random_and_truncated_files_raise_cache_errors(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    random_bytes = tmp_path / "random.safetensors"
    random_bytes.write_bytes(random.Random(0).randbytes(4096))
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    good = write_single(tmp_path / "good.safetensors", "x", make_tensors(0, num_tokens=100), {})
    data = good.read_bytes()
    truncated_data = tmp_path / "cut_data.safetensors"
    truncated_data.write_bytes(data[:-10])
    header_len = int.from_bytes(data[:8], "little")
    truncated_header = tmp_path / "cut_header.safetensors"
    truncated_header.write_bytes(data[: 8 + header_len // 2])
    newer = tmp_path / "newer.safetensors"
    save_file({"v0.tokens": torch.zeros(2, 2)}, str(newer),
              metadata={"aot_format": str(FORMAT_VERSION + 1), "aot_videos": '{"v0": {"id": "x"}}'})
    cases = {foreign: "not an aot token cache", random_bytes: "not a safetensors file",
             tiny: "not a safetensors file", truncated_data: "truncated",
             truncated_header: "truncated", newer: "newer than this aot-cli",
             tmp_path / "absent.safetensors": "no such file"}
    for path, cause in cases.items():
        with pytest.raises(CacheError) as info:
            TokenCache(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and cause in message and "\n" not in message, message


def test_truncated_shard_in_a_directory_names_the_shard(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c", shard_size=1) as writer:
        writer.add("a", make_tensors(0), {})
        writer.add("b", make_tensors(1), {})
    cache = TokenCache(tmp_path / "c")
    shard = tmp_path / "c" / cache.lookup("b")["shard"]
    shard.write_bytes(shard.read_bytes()[:-7])
    assert_same_tensors(TokenCache(tmp_path / "c")["a"], make_tensors(0))
    with pytest.raises(CacheError, match=f"^{re.escape(str(shard))}: truncated"):
        TokenCache(tmp_path / "c")["b"]


def test_directories_that_are_not_caches_are_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match=f"^{re.escape(str(plain))}: not an aot cache directory"):
        TokenCache(plain)
    with pytest.raises(CacheError, match=f"^{re.escape(str(plain))}: not an aot cache directory .*not empty"):
        CacheWriter(plain)
    assert sorted(os.listdir(plain)) == ["notes.txt"]
    with CacheWriter(tmp_path / "c") as writer:
        writer.add("a", make_tensors(0), {})
    manifest = tmp_path / "c" / "cache.json"
    created = json.loads(manifest.read_text())
    assert created["format_version"] == FORMAT_VERSION and created["kind"] == "aot-token-cache"
    with CacheWriter(tmp_path / "c", part="later") as writer:  # reopening never rewrites it
        writer.add("b", make_tensors(1), {})
    assert json.loads(manifest.read_text()) == created
    manifest.write_text(json.dumps({**created, "format_version": FORMAT_VERSION + 1}))
    for open_cache in (TokenCache, CacheWriter):
        with pytest.raises(CacheError, match=f"^{re.escape(str(manifest))}: cache format version .* is newer"):
            open_cache(tmp_path / "c")


def test_torn_index_line_is_ignored_and_repaired_on_resume(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c") as writer:
        writer.add("a", make_tensors(0), {})
    part = tmp_path / "c" / "index" / "r0.jsonl"
    with open(part, "ab") as f:
        f.write(b'{"id": "b", "status": "ok", "shard": "shards/r0-000')  # crash mid-append
    cache = TokenCache(tmp_path / "c")
    assert cache.ids() == ["a"] and cache.skipped_lines == 1
    with CacheWriter(tmp_path / "c") as writer:
        writer.add("c", make_tensors(2), {})
    cache = TokenCache(tmp_path / "c")
    assert cache.ids() == ["a", "c"] and cache.skipped_lines == 1
    assert_same_tensors(cache["c"], make_tensors(2))


def test_rows_whose_shard_is_gone_fall_back_to_the_previous_copy(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c", shard_size=1) as writer:
        writer.add("a", make_tensors(0), {"copy": 1})
        writer.add("a", make_tensors(1), {"copy": 2})
    cache = TokenCache(tmp_path / "c")
    assert cache["a"].meta == {"copy": 2}
    newest = cache.lookup("a")["shard"]
    (tmp_path / "c" / newest).unlink()
    cache.refresh()
    assert cache["a"].meta == {"copy": 1} and cache.missing_shards == [newest]
    assert_same_tensors(cache["a"], make_tensors(0))
    # once the video is written again (a rerun recomputing it), the lost shard is no longer a problem
    with CacheWriter(tmp_path / "c", shard_size=1) as writer:
        writer.add("a", make_tensors(2), {"copy": 3})
    cache = TokenCache(tmp_path / "c")
    assert cache["a"].meta == {"copy": 3} and cache.missing_shards == [] and cache.problems() == []


def test_bad_input_to_the_writer_raises_one_line_errors(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c") as writer:
        with pytest.raises(CacheError, match=r"video 'x': 'tokens' is a list, not a torch.Tensor"):
            writer.add("x", {"tokens": [1, 2]}, {})
        with pytest.raises(CacheError, match=r"video 'x': meta is not JSON-serialisable"):
            writer.add("x", make_tensors(0), {"when": object()})
        with pytest.raises(CacheError, match="cannot be stored"):
            writer.add("x", {"z": torch.zeros(2, dtype=torch.complex64)}, {})
        with pytest.raises(CacheError, match="video id must be a non-empty string"):
            writer.add("", make_tensors(0), {})
        assert writer.stats["buffered_videos"] == 0
    with pytest.raises(CacheError, match="is closed"):
        writer.add("y", make_tensors(0), {})
    with pytest.raises(ValueError, match="invalid part name"):
        CacheWriter(tmp_path / "c", part="../escape")


def test_exception_inside_with_block_still_commits_finished_videos(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="model crashed"):
        with CacheWriter(tmp_path / "c") as writer:
            writer.add("done", make_tensors(0), {})
            raise RuntimeError("model crashed")
    assert TokenCache(tmp_path / "c").ids() == ["done"]


# -- lazy reads, without a memory map --------------------------------------------------------

def test_tensors_are_read_from_the_file_only_on_access_and_never_mapped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = torch.zeros(64, 32, dtype=torch.float32)
    path = write_single(tmp_path / "lazy.safetensors", "v",
                        {"tokens": tokens, "kind": torch.zeros(64, dtype=torch.uint8)}, {"m": 1})
    reads = []
    real_read = ShardFile.read

    def counted_read(self: ShardFile, key: str, name: str):
        reads.append(name)
        return real_read(self, key, name)

    monkeypatch.setattr(ShardFile, "read", counted_read)
    cache = TokenCache(path)
    video = cache["v"]
    assert video.shapes["tokens"] == (64, 32) and video.meta == {"m": 1} and "kind" in video.names
    assert reads == []  # opening, listing and meta come from the header alone
    if sys.platform.startswith("linux"):  # read with pread: a file cut short cannot raise SIGBUS
        assert str(path) not in Path("/proc/self/maps").read_text()
    # Change the stored tokens in place: the tensor comes from the file as it is when accessed.
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8: 8 + header_len])
    start, _ = header["v0.tokens"]["data_offsets"]
    with open(path, "r+b") as f:
        f.seek(8 + header_len + start)
        f.write(torch.full((64, 32), 2.5).numpy().tobytes())
    assert torch.equal(video.tokens, torch.full((64, 32), 2.5))
    assert video.tokens is video.tokens and reads == ["tokens"]  # read once, then kept


# -- crash safety and concurrency -------------------------------------------------------------

CRASH_CHILD = """
import sys, torch
from aot_cli.cache import CacheWriter
directory, part, generation = sys.argv[1], sys.argv[2], int(sys.argv[3])
count = int(sys.argv[4])
print("ready", flush=True)
with CacheWriter(directory, shard_size=20_000, part=part) as writer:
    for i in range(count):
        value = generation * 100_000 + i
        tokens = torch.full((100, 16), float(value), dtype=torch.float32)
        writer.add(f"clip/{i % 23}/ü", {"tokens": tokens, "kind": torch.zeros(100, dtype=torch.uint8)},
                   {"value": value, "sha256": str(value)})
print("finished", flush=True)
"""


def test_sigkill_at_random_points_leaves_a_loadable_cache(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    rng = random.Random(1234)
    for generation in range(1, 6):
        child = run_child(CRASH_CHILD, str(directory), "r0" if generation % 2 else "r1",
                          str(generation), "100000")
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
    # a crashed writer's temporary shard, and one planted by hand, are never read
    (directory / "shards" / ".r0-00077-deadbeef.safetensors.0badf00d.aot-tmp").write_bytes(b"junk")
    cache = TokenCache(directory)
    assert len(cache) > 0
    committed: Dict[str, int] = {}
    for row in index_lines(directory):
        if (directory / row["shard"]).exists():
            committed[row["id"]] = max(committed.get(row["id"], -1), row["meta"]["value"])
    assert sorted(cache.ids()) == sorted(committed)
    for vid in cache.ids():
        video = cache[vid]
        value = video.meta["value"]
        assert value == committed[vid]  # the newest committed copy wins
        assert torch.equal(video.tokens, torch.full((100, 16), float(value)))
    # a normal run after the crashes resumes the part, clears its temp files, and completes
    child = run_child(CRASH_CHILD, str(directory), "r0", "9", "30")
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0 and "finished" in out, err
    assert not [p for p in (directory / "shards").iterdir() if p.name.startswith(".r0-")]
    cache = TokenCache(directory)
    for i in range(23):
        video = cache[f"clip/{i}/ü"]
        last = max(k for k in range(30) if k % 23 == i)
        assert video.meta["value"] == 9 * 100_000 + last
        assert torch.equal(video.tokens, torch.full((100, 16), float(9 * 100_000 + last)))


CONCURRENT_CHILD = """
import sys, torch
from aot_cli.cache import CacheWriter
directory, part = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()  # both writers start together
with CacheWriter(directory, shard_size=8_000, part=part) as writer:
    for i in range(40):
        vid = f"shared/{i}" if i < 5 else f"{part}/{i}"
        writer.add(vid, {"tokens": torch.full((50, 16), float(i)), "owner": torch.tensor([ord(part)])},
                   {"part": part})
print(writer.stats["videos"], flush=True)
"""


def test_two_processes_write_one_cache_concurrently(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    children = [run_child(CONCURRENT_CHILD, str(directory), part) for part in ("a", "b")]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        out, err = child.communicate("go\n", timeout=300)
        assert child.returncode == 0, err
        assert out.strip() == "40"
    cache = TokenCache(directory)
    assert len(cache) == 5 + 35 + 35
    assert sorted(p.name for p in (directory / "index").iterdir()) == ["a.jsonl", "b.jsonl"]
    for vid in cache.ids():
        video = cache[vid]
        assert video.meta["part"] == chr(int(video["owner"][0]))
        i = int(vid.rsplit("/", 1)[1])
        assert torch.equal(video.tokens, torch.full((50, 16), float(i)))
    for i in range(5):  # both wrote it; the later commit is the one read
        rows = [r for r in index_lines(directory) if r["id"] == f"shared/{i}"]
        assert cache.lookup(f"shared/{i}") == max(rows, key=lambda r: r["committed_at"])


def test_a_part_in_use_cannot_be_opened_by_a_second_writer(tmp_path: Path) -> None:
    first = CacheWriter(tmp_path / "c", part="r0")
    with pytest.raises(CacheError, match="part 'r0' is in use by another writer"):
        CacheWriter(tmp_path / "c", part="r0")
    first.close()
    CacheWriter(tmp_path / "c", part="r0").close()  # released on close


# -- unwritable and full disks ----------------------------------------------------------------

def test_unwritable_locations_raise_cache_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cause = "cannot create cache directory: .*ENOTDIR"
    with pytest.raises(CacheError, match=f"^{re.escape(str(blocker / 'cache'))}: {cause}"):
        CacheWriter(blocker / "cache")
    with pytest.raises(CacheError, match=f"^{re.escape(str(blocker))}: exists and is not a directory"):
        CacheWriter(blocker)
    with pytest.raises(CacheError, match=f"^{re.escape(str(blocker / 'x.safetensors'))}: cannot write"):
        write_single(blocker / "x.safetensors", "v", make_tensors(0), {})
    with pytest.raises(CacheError, match=f"^{re.escape(str(blocker / 'x.json'))}: cannot write"):
        atomic_write_bytes(blocker / "x.json", b"{}")


def _fail_writes(monkeypatch: pytest.MonkeyPatch, when) -> None:
    """Make the disk fill up during the first write whose data starts as ``when`` accepts: that
    write stores half its bytes, every write after it fails with ENOSPC."""
    real_write = os.write
    full = []

    def write(fd: int, data) -> int:
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if when(bytes(data[:16])):
            full.append(fd)
            return real_write(fd, data[: len(data) // 2])
        return real_write(fd, data)

    monkeypatch.setattr(atomic.os, "write", write)


@pytest.mark.parametrize("failing", ["shard", "index"])
def test_disk_full_keeps_earlier_commits_and_leaves_no_debris(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    directory = tmp_path / "c"
    writer = CacheWriter(directory)
    writer.add("early", make_tensors(0), {})
    writer.flush()
    index_part = directory / "index" / "r0.jsonl"
    index_size = index_part.stat().st_size
    writer.add("late", make_tensors(1), {})
    if failing == "shard":
        _fail_writes(monkeypatch, lambda head: not head.startswith(b'{"id"'))
        where = directory / "shards"
    else:
        _fail_writes(monkeypatch, lambda head: head.startswith(b'{"id"'))
        where = index_part
    cause = r"cannot .*No space left on device \(ENOSPC\)"
    with pytest.raises(CacheError, match=f"^{re.escape(str(where))}: {cause}"):
        writer.flush()
    monkeypatch.undo()
    early_shard = directory / TokenCache(directory).lookup("early")["shard"]
    assert list((directory / "shards").iterdir()) == [early_shard]  # no temp file, no orphan
    assert index_part.stat().st_size == index_size
    cache = TokenCache(directory)
    assert cache.ids() == ["early"]
    assert_same_tensors(cache["early"], make_tensors(0))
    assert writer.stats["buffered_videos"] == 1
    writer.close()  # space is back: the buffered video is committed
    assert_same_tensors(TokenCache(directory)["late"], make_tensors(1))


def test_every_storable_dtype_and_odd_shapes_round_trip(tmp_path: Path) -> None:
    tensors = {
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 7, dtype=torch.bfloat16),
        "flags": torch.tensor([True, False, True]),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "i16": torch.tensor([-300, 400], dtype=torch.int16),
        "u16": torch.tensor([1, 65535], dtype=torch.uint16),
        "f8": torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn),
        "strided": torch.arange(24, dtype=torch.int64).reshape(4, 6)[:, ::2],  # not contiguous
        "tokens": torch.randn(3, 5, dtype=torch.float16),
        "name.with.dots/and/slashes": torch.ones(2, dtype=torch.int32),
    }
    with CacheWriter(tmp_path / "c") as writer:
        writer.add("odd", tensors, {})
    video = TokenCache(tmp_path / "c")["odd"]
    assert video.names == list(tensors)  # listed in the order given
    for name, expected in tensors.items():
        got = video[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert torch.equal(got.view(torch.uint8) if got.dtype == torch.float8_e4m3fn else got,
                           expected.view(torch.uint8) if got.dtype == torch.float8_e4m3fn else expected), name


# -- the writer lock, orphan shards, what the writer refuses ------------------------------------

HOLDER_CHILD = """
import sys
from aot_cli.cache import CacheWriter
writer = CacheWriter(sys.argv[1], part=sys.argv[2])
print("holding", flush=True)
sys.stdin.readline()  # until the test says so
writer.close()
print("released", flush=True)
sys.stdin.readline()
"""

OPENER_CHILD = """
import json, sys
from aot_cli.cache import CacheWriter, PartInUseError
try:
    CacheWriter(sys.argv[1], part=sys.argv[2]).close()
    print(json.dumps({"opened": True}))
except PartInUseError as exc:
    print(json.dumps({"opened": False, "message": str(exc), "owner": exc.owner}))
"""


def _try_open(directory: Path, part: str) -> dict:
    child = run_child(OPENER_CHILD, str(directory), part)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    return json.loads(out)


def test_a_second_writer_on_a_part_in_use_is_refused_naming_the_first(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    holder = run_child(HOLDER_CHILD, str(directory), "r0")
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        second = _try_open(directory, "r0")
        assert second["opened"] is False and second["owner"]["pid"] == holder.pid
        assert f"pid {holder.pid}" in second["message"] and "part 'r0' is in use" in second["message"]
        assert "\n" not in second["message"]
        assert _try_open(directory, "r1")["opened"] is True  # other parts write concurrently
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert _try_open(directory, "r0")["opened"] is True  # free once the first writer closed
    finally:
        holder.kill()
        holder.communicate()
    killed = run_child(HOLDER_CHILD, str(directory), "r0")
    assert killed.stdout.readline().strip() == "holding"
    killed.send_signal(signal.SIGKILL)  # the lock dies with its process
    killed.communicate()
    assert _try_open(directory, "r0")["opened"] is True


CRASH_BEFORE_APPEND_CHILD = """
import os, signal, sys, torch
from aot_cli.cache import CacheWriter
with CacheWriter(sys.argv[1], part="r0", shard_size=int(sys.argv[2])) as writer:
    writer.add("kept", {"tokens": torch.ones(4, 2)}, {})
    writer.flush()
    # die between the segment's write (a new shard's rename, or an append) and its index rows
    type(writer)._append_index = lambda self, data: os.kill(os.getpid(), signal.SIGKILL)
    writer.add("lost", {"tokens": torch.zeros(4, 2)}, {})
    writer.flush()
"""


def test_an_orphan_shard_left_by_a_kill_is_swept_by_the_next_writer_of_its_part(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    child = run_child(CRASH_BEFORE_APPEND_CHILD, str(directory), "1")  # full at once: the next commit is a new file
    child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL
    cache = TokenCache(directory)
    assert cache.ids() == ["kept"]  # the orphan is invisible to readers
    named = directory / cache.lookup("kept")["shard"]
    (orphan,) = [p for p in (directory / "shards").iterdir() if p != named]
    assert orphan.name.startswith("r0-")
    # a shard of a part whose writer is alive is never touched, whatever it looks like
    holder = run_child(HOLDER_CHILD, str(directory), "r1")
    try:
        assert holder.stdout.readline().strip() == "holding"
        foreign = directory / "shards" / "r1-00007-0badc0de.safetensors"
        foreign.write_bytes(named.read_bytes())
        # a shard that a damaged line still mentions is kept (it may hold data worth recovering)
        mentioned = directory / "shards" / "r0-00009-feedf00d.safetensors"
        mentioned.write_bytes(named.read_bytes())
        with open(directory / "index" / "r0.jsonl", "ab") as f:
            f.write(b'{"id": "torn", "status": "ok", "shard": "shards/r0-00009-feedf00d.safetensors", "ke')
        with CacheWriter(directory, part="r0") as writer:
            assert writer.swept == [orphan.name]
            writer.add("lost", {"tokens": torch.zeros(4, 2)}, {})
        assert not orphan.exists() and foreign.exists() and mentioned.exists() and named.exists()
    finally:
        holder.kill()
        holder.communicate()
    cache = TokenCache(directory)
    assert sorted(cache.ids()) == ["kept", "lost"]
    assert torch.equal(cache["lost"].tokens, torch.zeros(4, 2))


def test_bytes_appended_but_never_committed_are_cut_off_and_the_shard_goes_on(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    child = run_child(CRASH_BEFORE_APPEND_CHILD, str(directory), str(1 << 30))
    child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL
    (shard,) = (directory / "shards").iterdir()  # the second segment went into the same file
    cache = TokenCache(directory)
    assert cache.ids() == ["kept"]  # the uncommitted segment is never read
    committed_end = cache.segment(shard.name, 0).header.end
    assert shard.stat().st_size > committed_end
    with CacheWriter(directory, part="r0") as writer:
        assert shard.stat().st_size == committed_end  # cut back before anything else
        writer.add("again", {"tokens": torch.full((4, 2), 3.0)}, {})
    assert list((directory / "shards").iterdir()) == [shard]  # appended, not a new file
    cache = TokenCache(directory)
    assert sorted(cache.ids()) == ["again", "kept"]
    assert cache.lookup("again")["offset"] >= committed_end and cache.lookup("again")["offset"] % 8 == 0
    assert torch.equal(cache["kept"].tokens, torch.ones(4, 2))
    assert torch.equal(cache["again"].tokens, torch.full((4, 2), 3.0))


def test_the_writer_refuses_links_and_special_files_inside_the_cache(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    directory = tmp_path / "c"
    CacheWriter(directory).close()
    (directory / "index" / "r1.jsonl").symlink_to(outside / "stolen.jsonl")
    with pytest.raises(CacheError, match="r1.jsonl: cannot open index: a symbolic link"):
        CacheWriter(directory, part="r1")
    os.mkfifo(directory / "index" / "r2.jsonl")
    with pytest.raises(CacheError, match="r2.jsonl: cannot open index: not a regular file"):
        CacheWriter(directory, part="r2")
    (directory / "failures.jsonl").symlink_to(outside / "log.jsonl")
    with CacheWriter(directory, part="r3") as writer:
        with pytest.raises(CacheError, match="failures.jsonl: cannot append"):
            writer.add_failure("x", "x.mp4", "decode_error", "bad")
    os.rename(directory / "shards", outside / "shards")
    (directory / "shards").symlink_to(outside / "shards")
    with pytest.raises(CacheError, match="shards: a symbolic link"):
        CacheWriter(directory, part="r4")
    assert sorted(os.listdir(outside)) == ["shards"]  # nothing was written through a link


def test_the_writer_refuses_what_the_reader_would_refuse(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c") as writer:
        with pytest.raises(CacheError, match="tensor 'segments' has shape \\[4\\], not 2-D"):
            writer.add("x", {"segments": torch.zeros(4, dtype=torch.int32)}, {})
        with pytest.raises(CacheError, match="'frame' has 3 rows but 'tokens' has 4"):
            writer.add("x", {"tokens": torch.zeros(4, 2), "frame": torch.zeros(3, dtype=torch.int32)}, {})
        with pytest.raises(CacheError, match="tensor 'tokens' is int64, not floating-point"):
            writer.add("x", {"tokens": torch.zeros(4, 2, dtype=torch.int64)}, {})
        deep: dict = {}
        for _ in range(100):
            deep = {"a": deep}
        with pytest.raises(CacheError, match="nests arrays/objects more than 62 levels"):
            writer.add("x", {"tokens": torch.zeros(4, 2)}, {"extra": deep})
        with pytest.raises(CacheError, match="integer of 50 digits"):
            writer.add("x", {"tokens": torch.zeros(4, 2)}, {"n": 10 ** 49})
        very_deep: list = []
        for _ in range(5000):
            very_deep = [very_deep]
        with pytest.raises(CacheError, match="too deeply"):
            writer.add("x", {"tokens": torch.zeros(4, 2)}, {"extra": very_deep})
        writer.add("fine", {"tokens": torch.zeros(4, 2)}, {"extra": {"a": {"b": [1, 2, {"c": 3}]}}})
        assert writer.stats["buffered_videos"] == 1
