"""Property-based fuzzing of the cache reader (hypothesis): mutated valid caches (bit flips,
truncations, JSON values replaced by wrong types, huge or non-finite numbers and deep nesting,
files swapped for links or FIFOs) are either read or refused with CacheError, within a time and
memory bound; `aot inspect`'s statistics and table never raise anything else either.

Reproducible: derandomized, no example database; sized to run in well under a minute."""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import tempfile
import tracemalloc
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from aot_cli.cache import CacheError, TokenCache
from aot_cli.safejson import loads, nesting_exceeds
from aot_cli.inspect.render import print_stats
from aot_cli.inspect.stats import cache_stats
from cachefiles import cache_dir, make_fifo, nested, put_header, read_everything, single_file, split_file

TIME_LIMIT_S = 30  # per example, on a busy 2-core machine; a hang fails the test
MEMORY_LIMIT = 64 << 20  # bytes Python may allocate while reading one mutated cache
FUZZ = settings(max_examples=120, deadline=timedelta(seconds=TIME_LIMIT_S), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
MARK = "@@HOSTILE@@"
DELETE = object()
HOSTILE_VALUES: List[Any] = [
    "Infinity", "-Infinity", "NaN", "1e400", "-1e400", "1" + "0" * 5000, "1" + "0" * 39, "-1", "0", "1.5", "true",
    "null", '""', '"x"', '"\\u001b[2J\\u001b]0;t\\u0007"', '"\\u0000"', "[]", "{}", "[1, 2]", '{"a": 1}',
    nested(65), nested(1000), nested(30_000), nested(30_000, "object"), DELETE,
]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-template")
    cache_dir(root / "cache", count=3, failures=1)
    single_file(root / "one.safetensors", "clips/a.mp4", seed=5)
    outside = root / "outside"
    outside.mkdir()
    single_file(outside / "secret.safetensors", "SECRET", seed=9)
    (outside / "index.jsonl").write_text(json.dumps({"id": "SECRET", "status": "ok", "key": "v0",
                                                     "shard": "shards/x.safetensors", "committed_at": "9"}) + "\n")
    return root


@contextmanager
def bounded() -> Iterator[None]:
    """Fail when the block runs longer than TIME_LIMIT_S or allocates more than MEMORY_LIMIT."""
    def alarm(*_: Any) -> None:
        raise TimeoutError(f"reading took more than {TIME_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
        assert peak < MEMORY_LIMIT, f"reading allocated {peak} bytes"
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_and_inspect(path: Path) -> None:
    """The whole reading API, then inspect's statistics and table: only CacheError may escape."""
    with bounded():
        out = read_everything(path)
        assert "SECRET" not in out.ids  # nothing read from outside the cache
        for message in out.messages:
            assert "\n" not in message
        try:
            stats = cache_stats(TokenCache(path))
        except CacheError:
            return
        print_stats(stats, per_frame=True, console=Console(file=io.StringIO(), width=120))
        json.dumps(stats, allow_nan=False)  # --json output is valid JSON


def fresh_copy(template: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix="aot-fuzz-"))
    shutil.copytree(template / "cache", work / "cache", symlinks=True)
    shutil.copy(template / "one.safetensors", work / "one.safetensors")
    return work


def targets(work: Path) -> List[Tuple[Path, Path]]:
    """(file to mutate, what to read afterwards)."""
    cache = work / "cache"
    files = [cache / "cache.json", cache / "index" / "r0.jsonl"]
    files += sorted(p for p in (cache / "shards").iterdir() if not p.name.startswith("."))
    return [(f, cache) for f in files] + [(work / "one.safetensors", work / "one.safetensors")]


# -- bytes: flips and cuts ------------------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_bit_flips_and_truncations_read_or_raise_cache_error(template, data):
    work = fresh_copy(template)
    try:
        target, read = data.draw(st.sampled_from(targets(work)), label="target")
        raw = bytearray(target.read_bytes())
        if data.draw(st.booleans(), label="truncate"):
            raw = raw[:data.draw(st.integers(0, len(raw)), label="cut at")]
        else:
            # flips concentrated where it matters: the first 4 KiB hold the length prefix and header
            for _ in range(data.draw(st.integers(1, 8), label="flips")):
                where = data.draw(st.integers(0, min(len(raw), 4096) - 1), label="byte")
                raw[where] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        target.write_bytes(bytes(raw))
        read_and_inspect(read)
    finally:
        shutil.rmtree(work)


# -- JSON: a value replaced by a hostile one ----------------------------------------------------------

def slots(value: Any, path: Tuple = ()) -> Iterator[Tuple]:
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from slots(child, path + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value[:3]):
            yield from slots(child, path + (i,))


def replaced(document: Any, path: Tuple, hostile: Any) -> str:
    """``document`` as JSON text with the value at ``path`` replaced by the raw text ``hostile``
    (or removed, for DELETE)."""
    if not path:
        return "{}" if hostile is DELETE else hostile
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if hostile is DELETE:
        del parent[path[-1]]
        return json.dumps(document)
    parent[path[-1]] = MARK
    return json.dumps(document).replace(json.dumps(MARK), hostile, 1)


def mutate_json(text: str, data, label: str) -> str:
    document = json.loads(text)
    paths = list(slots(document))
    path = paths[data.draw(st.integers(0, len(paths) - 1), label=f"{label} slot")]
    return replaced(document, path, data.draw(st.sampled_from(HOSTILE_VALUES), label=f"{label} value"))


@FUZZ
@given(data=st.data())
def test_hostile_json_values_anywhere_read_or_raise_cache_error(template, data):
    work = fresh_copy(template)
    try:
        target, read = data.draw(st.sampled_from(targets(work)), label="target")
        if target.suffix == ".safetensors":
            header = json.loads(split_file(target)[0])
            if data.draw(st.booleans(), label="in the video table"):
                table = mutate_json(header["__metadata__"]["aot_videos"], data, "videos")
                header["__metadata__"]["aot_videos"] = table
                text = json.dumps(header)
            else:
                text = mutate_json(json.dumps(header), data, "header")
            put_header(target, text.encode("utf-8"))
        elif target.suffix == ".jsonl":
            lines = target.read_text().splitlines()
            number = data.draw(st.integers(0, len(lines) - 1), label="line")
            lines[number] = mutate_json(lines[number], data, "row")
            target.write_text("\n".join(lines) + "\n")
        else:
            target.write_text(mutate_json(target.read_text(), data, "manifest"))
        read_and_inspect(read)
    finally:
        shutil.rmtree(work)


# -- files swapped for links and FIFOs -------------------------------------------------------------

@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_files_swapped_for_links_or_fifos_are_never_followed_or_blocking(template, data):
    work = fresh_copy(template)
    try:
        cache = work / "cache"
        candidates = [cache / "cache.json", cache / "index" / "r0.jsonl", cache / "index" / "r7.jsonl",
                      cache / "shards", cache / "index"] + sorted((cache / "shards").iterdir())
        target = data.draw(st.sampled_from(candidates), label="target")
        swap = data.draw(st.sampled_from(["fifo", "outside", "dev-zero", "dangling"]), label="swap")
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        outside = {"fifo": None, "outside": template / "outside" / ("index.jsonl" if target.suffix == ".jsonl"
                                                                   else "secret.safetensors"),
                   "dev-zero": Path("/dev/zero"), "dangling": work / "nothing"}[swap]
        if swap == "fifo":
            make_fifo(target)
        else:
            target.symlink_to(outside)
        read_and_inspect(cache)
    finally:
        shutil.rmtree(work)


# -- the nesting scan itself ------------------------------------------------------------------------

def json_values(depth: int = 6):
    leaves = st.one_of(st.integers(-10, 10), st.text(alphabet='ab"\\[]{}\u00e9\n', max_size=6), st.none(),
                       st.booleans())
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(alphabet='k"\\[{', max_size=3),
                                                                        inner, max_size=3)), max_leaves=20)


def true_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((true_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((true_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=json_values(), limit=st.integers(0, 8), ascii_only=st.booleans())
def test_the_nesting_scan_is_exact_on_valid_json(value, limit, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    assert nesting_exceeds(text, limit) == (true_depth(value) > limit)
    if true_depth(value) <= limit:
        assert loads(text, max_depth=limit) == value


def test_the_nesting_scan_handles_chunk_boundaries(monkeypatch):
    import aot_cli.safejson as safejson

    rng = random.Random(0)
    for _ in range(200):
        value = json.loads(json.dumps([["\\\\\"[" * rng.randint(0, 3), {"k\\": [[1]]}]] * rng.randint(1, 3)))
        text = json.dumps(value).encode()
        monkeypatch.setattr(safejson, "_CHUNK", rng.choice([1, 2, 3, 5, 64]))
        for limit in range(0, 6):
            assert safejson.nesting_exceeds(text, limit) == (true_depth(value) > limit)
    monkeypatch.setattr(safejson, "_CHUNK", 1 << 20)
    assert safejson.nesting_exceeds(b"[" * 3_000_000 + b"]" * 3_000_000)
    assert not safejson.nesting_exceeds(b'"' + b"[" * 3_000_000 + b'"')  # inside a string: no depth


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\n")), chunk=st.integers(1, 17),
       max_line=st.integers(0, 12))
def test_index_lines_are_split_like_split_with_long_lines_dropped(tmp_path_factory, data, chunk, max_line):
    import aot_cli.cache.index as index

    path = tmp_path_factory.mktemp("lines") / "part.jsonl"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    original = index._CHUNK
    index._CHUNK = chunk
    try:
        got = list(index.iter_lines(fd, len(data), path, max_line))
    finally:
        index._CHUNK = original
        os.close(fd)
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()  # a final newline ends the last line; it does not start another
    want = [(n, p if len(p) <= max_line else None) for n, p in enumerate(pieces)]
    assert got == want
