#!/usr/bin/env python
"""Hostile inputs for the cache reader and `aot inspect`: how many of each kind end cleanly.

Builds a valid cache by hand (the safetensors bytes are written here with numpy and json, so the
inputs do not depend on the code under test), mutates it into many hostile inputs of each kind
(deep JSON nesting, non-finite or huge numbers, wrong types and shapes, ids with terminal escape
sequences, FIFOs, symlinks inside the cache, huge files, a shard truncated while it is read, and
metadata that claims 200,000 frames for ``--overlay``), and runs on each, in subprocesses:

- the library: ``TokenCache(path)``, every id, ``cache[id]``, every tensor, ``entries()``,
  ``failures()``, ``lookup()``; clean when it ends within the time limit and raises nothing but
  ``CacheError`` (and lists no video from outside the cache);
- the command: ``aot inspect PATH`` (``--overlay`` for the overlay kind); clean when it ends
  within the time limit with exit status 0, 1 or 2, no traceback, at most three stderr lines, no
  raw control character (ESC, CSI, BEL, CR, bidi override) in its output and no video from
  outside the cache listed.

An input is clean when both runs are. Prints one row per kind (tried / clean) and, with
``--verbose``, what went wrong for each input that is not clean.

    python benchmarks/hostile_reader.py                                # this checkout
    python benchmarks/hostile_reader.py --python /other/.venv/bin/python --cwd /other/checkout

Every subprocess runs with a 6 GiB address-space limit so that a reader without memory bounds
cannot take the machine down.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent.parent
OUTSIDE_ID = "OUTSIDE-THE-CACHE"
DEPTH = 50_000
RAW_CONTROLS = ["\x1b", "\x9b", "\x07", "\r", "\u202e"]

# -- writing aot safetensors files by hand -----------------------------------------------------

CODES = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i4"): "I32", np.dtype("<i8"): "I64",
         np.dtype("u1"): "U8", np.dtype("<f2"): "F16"}


def video_tensors(seed: int, frames: int = 8, tokens: int = 40, dim: int = 16) -> "OrderedDict[str, np.ndarray]":
    rng = np.random.default_rng(seed)
    t = OrderedDict()
    t["tokens"] = rng.standard_normal((tokens, dim)).astype("<f4")
    t["frame"] = np.sort(rng.integers(0, frames, tokens)).astype("<i4")
    t["index"] = rng.integers(0, 25, tokens).astype("<i4")
    t["kind"] = rng.integers(0, 3, tokens).astype("u1")
    t["frame_indices"] = (np.arange(frames) * 3).astype("<i8")
    t["timestamps"] = (np.arange(frames) * 0.1).astype("<f8")
    for name in ("anchors_per_frame", "cells_per_frame", "kept_per_frame", "merged_per_frame"):
        t[name] = rng.integers(0, 5, frames).astype("<i4")
    t["segments"] = np.array([[0, 4], [4, 4]], dtype="<i4")
    t["anchor_mask"] = (rng.random((frames, 81)) < 0.1).astype("u1")
    t["cell_mask"] = (rng.random((frames, 25)) < 0.2).astype("u1")
    return t


def video_meta(seed: int, frames: int = 8, path: str = "", sha: str = "") -> dict:
    return {"video_id": f"clip{seed}.mp4",
            "video": {"path": path or f"/nowhere/clip{seed}.mp4", "sha256": sha or f"{seed:064x}",
                      "width": 640, "height": 272},
            "sampling": {"decoder": "pyav", "requested_frames": frames, "frames": frames},
            "model": {"model": "tiny/model", "preprocessing": {"resize": "exact", "size": [126, 126]}},
            "config": {"decode": {"frames": frames, "decoder": "pyav"}, "method": {"method": "aot"}},
            "counts": {"frames": frames, "tower_grid": [9, 9], "grid": [5, 5], "tokens_per_frame": 25,
                       "uncompressed_tokens": frames * 25, "planned": 40, "achieved": 40,
                       "ratio": 40 / (frames * 25), "requested_ratio": 0.2, "newlines": 0, "total": 40},
            "config_fingerprint": "fp", "sha256": sha or f"{seed:064x}"}


def safetensors_file(videos: List[Tuple[str, dict, Dict[str, np.ndarray]]], kind: str = "shard",
                     header_patch: Callable[[dict], None] = None, videos_json: str = None,
                     metadata_patch: Callable[[dict], None] = None, raw_header: bytes = None) -> bytes:
    """An aot safetensors file holding ``videos`` [(id, meta, tensors)]."""
    header: Dict[str, object] = {}
    listing = {}
    blobs = []
    offset = 0
    for k, (vid, meta, tensors) in enumerate(videos):
        listing[f"v{k}"] = {"id": vid, "meta": meta}
        for name, arr in tensors.items():
            data = np.ascontiguousarray(arr).tobytes()
            header[f"v{k}.{name}"] = {"dtype": CODES[arr.dtype], "shape": list(arr.shape),
                                      "data_offsets": [offset, offset + len(data)]}
            blobs.append(data)
            offset += len(data)
    metadata = {"aot_format": "1", "aot_kind": kind, "aot_created_at": "2026-01-01T00:00:00.000000Z",
                "aot_videos": videos_json if videos_json is not None else json.dumps(listing)}
    if metadata_patch:
        metadata_patch(metadata)
    header["__metadata__"] = metadata
    if header_patch:
        header_patch(header)
    raw = raw_header if raw_header is not None else json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + b"".join(blobs)


def good_videos(n: int = 3, **kw) -> list:
    return [(f"clips/c{k}.mp4", video_meta(k, **kw), video_tensors(k)) for k in range(n)]


def write_cache(root: Path, videos: list = None, manifest: bytes = None, rows: List[bytes] = None,
                shard_bytes: bytes = None) -> Path:
    """A cache directory: cache.json, one shard, one index part naming every video of it."""
    videos = videos if videos is not None else good_videos()
    root.mkdir(parents=True)
    (root / "shards").mkdir()
    (root / "index").mkdir()
    (root / "cache.json").write_bytes(manifest if manifest is not None else
                                      b'{"kind": "aot-token-cache", "format_version": 1, "created_at": "x"}')
    name = "r0-00000-0123abcd.safetensors"
    (root / "shards" / name).write_bytes(shard_bytes if shard_bytes is not None else safetensors_file(videos))
    if rows is None:
        rows = [json.dumps({"id": vid, "status": "ok", "shard": f"shards/{name}", "key": f"v{k}",
                            "num_tokens": 40, "sha256": meta.get("sha256") if isinstance(meta, dict) else None,
                            "config_fingerprint": "fp", "meta": meta,
                            "committed_at": f"2026-01-01T00:00:0{k}.000000Z"}).encode()
                for k, (vid, meta, _) in enumerate(videos)]
    (root / "index" / "r0.jsonl").write_bytes(b"".join(r + b"\n" for r in rows))
    return root


def nested(depth: int = DEPTH, kind: str = "list") -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


def row(vid: str, **fields) -> bytes:
    base = {"id": vid, "status": "ok", "shard": "shards/r0-00000-0123abcd.safetensors", "key": "v0",
            "num_tokens": 40, "sha256": "00", "config_fingerprint": "fp", "meta": {},
            "committed_at": "2026-01-01T00:00:09.000000Z"}
    base.update(fields)
    return json.dumps(base).encode()


# -- the inputs, by kind ------------------------------------------------------------------------

def build_inputs(work: Path, video_file: Path) -> "OrderedDict[str, List[Tuple[str, Path, dict]]]":
    kinds: "OrderedDict[str, List[Tuple[str, Path, dict]]]" = OrderedDict()
    counter = [0]

    def new(kind: str, name: str, opts: dict = None) -> Path:
        counter[0] += 1
        path = work / f"{counter[0]:03d}-{kind}-{name}"
        kinds.setdefault(kind, []).append((name, path, opts or {}))
        return path

    def single(kind: str, name: str, data: bytes, opts: dict = None) -> None:
        new(kind, name, opts).write_bytes(data)

    # 1. deep nesting
    k = "deep-nesting"
    write_cache(new(k, "manifest-list"), manifest=('{"kind": "aot-token-cache", "format_version": 1, "x": '
                                                    + nested() + "}").encode())
    write_cache(new(k, "manifest-object"), manifest=nested(kind="object").encode())
    single(k, "header-top-level", _add_top_level(safetensors_file(good_videos(1)), "__x__", nested()))
    single(k, "tensor-entry", _add_top_level(safetensors_file(good_videos(1)), "v0.extra", nested(kind="object")))
    single(k, "video-table", safetensors_file(good_videos(1), videos_json=nested()))
    single(k, "video-table-object", safetensors_file(good_videos(1), videos_json=nested(kind="object")))
    table = json.dumps({"v0": {"id": "a.mp4", "meta": {"counts": "PLACEHOLDER"}}}).replace(
        '"PLACEHOLDER"', nested())
    single(k, "meta-in-header", safetensors_file(good_videos(1), videos_json=table))
    write_cache(new(k, "shard-meta-in-dir"), shard_bytes=safetensors_file(good_videos(3), videos_json=json.dumps(
        {f"v{i}": {"id": f"clips/c{i}.mp4", "meta": {}} for i in range(3)}).replace('"meta": {}}}', '"meta": '
                                                                                   + nested() + "}}")))
    write_cache(new(k, "index-row-meta"), rows=[row("clips/c0.mp4").replace(b'"meta": {}', b'"meta": '
                                                                          + nested().encode())])
    write_cache(new(k, "index-line-bare"), rows=[row("clips/c0.mp4"), nested().encode()])
    write_cache(new(k, "index-row-shard-field"), rows=[row("clips/c0.mp4").replace(
        b'"shard": "shards/r0-00000-0123abcd.safetensors"', b'"shard": ' + nested(kind="object").encode())])
    single(k, "metadata-block", _replace_metadata(safetensors_file(good_videos(1)), nested()))

    # 2. non-finite and huge numbers
    k = "numbers"
    for label, value in (("infinity", "Infinity"), ("minus-infinity", "-Infinity"), ("nan", "NaN"),
                         ("1e400", "1e400"), ("5000-digits", "1" + "0" * 5000), ("huge-int", "1" + "0" * 100),
                         ("negative", "-1"), ("float", "1.5"), ("bool", "true")):
        write_cache(new(k, f"manifest-{label}"),
                    manifest=('{"kind": "aot-token-cache", "format_version": ' + value + "}").encode())
    for label, value in (("infinity", "Infinity"), ("1e400", "1e400"), ("huge", "9" * 30)):
        single(k, f"aot-format-{label}", safetensors_file(good_videos(1), metadata_patch=lambda m, v=value: m.update(
            aot_format=v)))
    write_cache(new(k, "row-num-tokens-infinity"), rows=[row("clips/c0.mp4").replace(b'"num_tokens": 40',
                                                                                     b'"num_tokens": Infinity')])
    write_cache(new(k, "row-committed-at-number"), rows=[row("clips/c0.mp4").replace(
        b'"committed_at": "2026-01-01T00:00:09.000000Z"', b'"committed_at": 1e400')])
    table = json.dumps({"v0": {"id": "a.mp4", "meta": video_meta(0)}}).replace('"ratio": 0.2', '"ratio": NaN')
    single(k, "meta-ratio-nan", safetensors_file(good_videos(1), videos_json=table))
    table = json.dumps({"v0": {"id": "a.mp4", "meta": video_meta(0)}}).replace('"frames": 8,', '"frames": 1e400,', 1)
    single(k, "meta-frames-1e400", safetensors_file(good_videos(1), videos_json=table))
    bad_shape = good_videos(1)
    single(k, "shape-huge", safetensors_file(bad_shape, header_patch=lambda h: h["v0.tokens"].update(
        shape=[10 ** 30, 16])))
    single(k, "offset-huge", safetensors_file(bad_shape, header_patch=lambda h: h["v0.kind"].update(
        data_offsets=[0, 10 ** 30])))
    single(k, "header-length-2-63", (2 ** 63).to_bytes(8, "little") + b"{}")

    # 3. wrong types and shapes
    k = "wrong-types"

    def table_with(meta_json: str, vid: str = '"a.mp4"') -> str:
        return '{"v0": {"id": ' + vid + ', "meta": ' + meta_json + "}}"

    for label, meta_json in (("string", '"just a string"'), ("list", "[1, 2]"), ("number", "3"), ("null", "null"),
                             ("counts-string", '{"counts": "x"}'), ("counts-list", '{"counts": [1]}'),
                             ("ratio-string", '{"counts": {"ratio": "high", "frames": 8}}'),
                             ("frames-string", '{"counts": {"frames": "eight"}}'),
                             ("video-string", '{"video": "clip.mp4"}'), ("model-list", '{"model": [1]}'),
                             ("method-string", '{"config": {"method": "aot"}}'),
                             ("config-list", '{"config": [1]}')):
        single(k, f"meta-{label}", safetensors_file(good_videos(1), videos_json=table_with(meta_json)))
    for label, vid in (("number", "7"), ("null", "null"), ("empty", '""'), ("list", '["a"]')):
        single(k, f"id-{label}", safetensors_file(good_videos(1), videos_json=table_with("{}", vid)))
    single(k, "video-entry-string", safetensors_file(good_videos(1), videos_json='{"v0": "a.mp4"}'))
    single(k, "video-table-list", safetensors_file(good_videos(1), videos_json='[{"id": "a.mp4"}]'))
    single(k, "video-table-not-json", safetensors_file(good_videos(1), videos_json="{not json"))

    def with_tensor(name: str, arr: np.ndarray, label: str) -> None:
        vids = good_videos(1)
        vids[0][2][name] = arr
        single(k, label, safetensors_file(vids))

    with_tensor("segments", np.array([0, 4, 4, 4], dtype="<i4"), "segments-1d")
    with_tensor("segments", np.zeros((2, 3), dtype="<i4"), "segments-3-columns")
    with_tensor("segments", np.array([[0.0, 4.0]], dtype="<f4"), "segments-float")
    with_tensor("timestamps", np.zeros(9, dtype="<f8"), "per-frame-lengths-differ")
    with_tensor("kept_per_frame", np.zeros(3, dtype="<i4"), "per-frame-short")
    with_tensor("anchors_per_frame", np.zeros((8, 2), dtype="<i4"), "per-frame-2d")
    with_tensor("tokens", np.zeros(40, dtype="<f4"), "tokens-1d")
    with_tensor("tokens", np.zeros((40, 16), dtype="<i4"), "tokens-int")
    with_tensor("frame", np.zeros(41, dtype="<i4"), "frame-length")
    with_tensor("kind", np.zeros(40, dtype="<i4"), "kind-int32")
    with_tensor("kind", np.zeros((40, 1), dtype="u1"), "kind-2d")
    with_tensor("index", np.zeros(40, dtype="<f4"), "index-float")
    with_tensor("anchor_mask", np.zeros(81, dtype="u1"), "mask-1d")
    with_tensor("cell_mask", np.zeros((10, 25), dtype="u1"), "mask-frames")
    for label, patch in (("shape-negative", lambda h: h["v0.kind"].update(shape=[-40])),
                         ("shape-float", lambda h: h["v0.kind"].update(shape=[40.0])),
                         ("shape-string", lambda h: h["v0.kind"].update(shape="40")),
                         ("dtype-unknown", lambda h: h["v0.kind"].update(dtype="X99")),
                         ("offsets-reversed", lambda h: h["v0.kind"].update(
                             data_offsets=h["v0.kind"]["data_offsets"][::-1])),
                         ("offsets-strings", lambda h: h["v0.kind"].update(data_offsets=["0", "40"])),
                         ("offsets-three", lambda h: h["v0.kind"].update(data_offsets=[0, 40, 80])),
                         ("tensor-info-string", lambda h: h.update({"v0.kind": "U8"})),
                         ("metadata-list", lambda h: h.update({"__metadata__": [1]})),
                         ("metadata-values-not-strings", lambda h: h["__metadata__"].update(aot_format=1)),
                         ("size-mismatch", lambda h: h["v0.kind"].update(shape=[41]))):
        single(k, label, safetensors_file(good_videos(1), header_patch=patch))
    single(k, "header-list", _replace_header(safetensors_file(good_videos(1)), b"[1, 2, 3]"))
    single(k, "empty-file", b"")
    for label, bad in (("status-number", row("clips/c0.mp4", status=3)), ("id-list", row("x", id=["a"])),
                       ("shard-number", row("clips/c0.mp4", shard=5)), ("key-object", row("clips/c0.mp4", key={})),
                       ("key-other-video", row("clips/c0.mp4", key="v2")),
                       ("meta-string", row("clips/c0.mp4", meta="m")),
                       ("num-tokens-string", row("clips/c0.mp4", num_tokens="40")),
                       ("sha-number", row("clips/c0.mp4", sha256=5)), ("row-list", b"[1, 2]"),
                       ("row-string", b'"row"'), ("failure-error-object", row("bad.mp4", status="decode_error",
                                                                               error={"a": 1}, shard=None)),
                       ("shard-outside", row("clips/c0.mp4", shard="../../etc/passwd")),
                       ("not-utf8", b'{"id": "\xff\xfe", "status": "ok"}')):
        write_cache(new(k, f"row-{label}"), rows=[row("clips/c1.mp4", key="v1"), bad])

    # 4. ids (and other printed text) with terminal escape sequences
    k = "escapes"
    for label, vid in (("ansi-clear", "evil\x1b[2J\x1b[31mRED\nnewline\rCR"),
                       ("osc-hyperlink", "\x1b]8;;http://example.invalid\x07link\x1b]8;;\x07"),
                       ("c1-csi", "c1\x9b31mred"), ("bell", "bell\x07\x07"), ("bidi", "abc\u202edcba.mp4"),
                       ("rich-markup", "[bold red]x[/] [/]"), ("nul-del", "nul\x00del\x7f"),
                       ("cr-only", "looks-fine\rOVERWRITTEN")):
        single(k, f"single-{label}", safetensors_file([(vid, video_meta(0), video_tensors(0))]))
    vids = [("ok.mp4", video_meta(0), video_tensors(0)), ("dir\x1b[2Jcache.mp4", video_meta(1), video_tensors(1))]
    write_cache(new(k, "dir-ids"), videos=vids)
    meta = video_meta(0)
    meta["model"]["model"] = "model\x1b[31m\rX"
    single(k, "model-name", safetensors_file([("m.mp4", meta, video_tensors(0))]))
    write_cache(new(k, "failure-row"), rows=[row("clips/c0.mp4"), row("fail\x1b[2J.mp4", status="decode\x1b[31m",
                                                                      error="bad\x1b]0;title\x07\rX", shard=None)])
    write_cache(new(k, "unknown-row-in-message"), rows=[row("x\x1b[2J", shard="shards/gone\x1b[31m.safetensors")])

    # 5. FIFOs
    k = "fifo"
    fifo_cache = write_cache(new(k, "index-part"))
    os.mkfifo(fifo_cache / "index" / "r1.jsonl")
    os.mkfifo(new(k, "cache-file"))
    fifo_cache = write_cache(new(k, "shard"))
    shard = fifo_cache / "shards" / "r0-00000-0123abcd.safetensors"
    shard.unlink()
    os.mkfifo(shard)
    fifo_cache = write_cache(new(k, "manifest"))
    (fifo_cache / "cache.json").unlink()
    os.mkfifo(fifo_cache / "cache.json")
    fifo_cache = write_cache(new(k, "index-dir-entry-named-jsonl"))
    os.mkfifo(fifo_cache / "index" / "zz.jsonl")

    # 6. symlinks inside the cache (pointing outside it)
    k = "symlinks"
    outside = work / "outside"
    outside.mkdir()
    (outside / "shard.safetensors").write_bytes(safetensors_file([(OUTSIDE_ID, video_meta(0), video_tensors(0))]))
    (outside / "index.jsonl").write_bytes(row(OUTSIDE_ID, shard="shards/r0-00000-0123abcd.safetensors") + b"\n")
    (outside / "shards").mkdir()
    (outside / "shards" / "r0-00000-0123abcd.safetensors").write_bytes(
        safetensors_file([(OUTSIDE_ID, video_meta(0), video_tensors(0))] * 3))
    (outside / "index").mkdir()
    (outside / "index" / "r0.jsonl").write_bytes(row(OUTSIDE_ID) + b"\n")
    (outside / "cache.json").write_bytes(b'{"kind": "aot-token-cache", "format_version": 1}')
    c = write_cache(new(k, "shard"))
    (c / "shards" / "r0-00000-0123abcd.safetensors").unlink()
    os.symlink(outside / "shard.safetensors", c / "shards" / "r0-00000-0123abcd.safetensors")
    (c / "index" / "r0.jsonl").write_bytes(row(OUTSIDE_ID) + b"\n")
    c = write_cache(new(k, "shards-dir"))
    shutil.rmtree(c / "shards")
    os.symlink(outside / "shards", c / "shards")
    (c / "index" / "r0.jsonl").write_bytes(row(OUTSIDE_ID) + b"\n")
    c = write_cache(new(k, "index-part"))
    os.symlink(outside / "index.jsonl", c / "index" / "r1.jsonl")
    c = write_cache(new(k, "index-dir"))
    shutil.rmtree(c / "index")
    os.symlink(outside / "index", c / "index")
    c = write_cache(new(k, "manifest"))
    (c / "cache.json").unlink()
    os.symlink(outside / "cache.json", c / "cache.json")
    c = write_cache(new(k, "index-part-dev-zero"))
    os.symlink("/dev/zero", c / "index" / "r1.jsonl")
    c = write_cache(new(k, "shard-dev-zero"))
    (c / "shards" / "r0-00000-0123abcd.safetensors").unlink()
    os.symlink("/dev/zero", c / "shards" / "r0-00000-0123abcd.safetensors")
    c = write_cache(new(k, "manifest-dev-zero"))
    (c / "cache.json").unlink()
    os.symlink("/dev/zero", c / "cache.json")

    # 7. huge files (sparse)
    k = "huge-files"
    c = write_cache(new(k, "index-part-8GB-zeros"))
    with open(c / "index" / "r1.jsonl", "wb") as f:
        f.truncate(8 << 30)
    c = write_cache(new(k, "index-part-8GB-one-line"))
    with open(c / "index" / "r1.jsonl", "wb") as f:
        f.write(b'{"id": "x", "status": "ok", "meta": "')
        f.truncate(8 << 30)
    c = write_cache(new(k, "manifest-2GB"))
    with open(c / "cache.json", "r+b") as f:
        f.truncate(2 << 30)
    path = new(k, "header-claims-100MB")
    path.write_bytes((100_000_000).to_bytes(8, "little") + b"{" + b" " * 100)
    path = new(k, "header-100MB-sparse")
    with open(path, "wb") as f:
        f.write((99_999_992).to_bytes(8, "little") + b'{"__metadata__": {"aot_format": "1", "x": "')
        f.truncate(8 + 99_999_992)

    # 8. a shard truncated after it was opened (library only)
    k = "truncated-while-read"
    for cut in (0, 100, 4000):
        write_cache(new(k, f"cut-to-{cut}", {"truncate_shard_to": cut}))

    # 9. --overlay on metadata that claims very many frames
    k = "overlay-frames"
    sha = hashlib.sha256(video_file.read_bytes()).hexdigest()
    for label, frames_claim, stored in (("meta-claims-200000", 200_000, 8), ("decode-config-200000", 200_000, 8),
                                        ("arrays-of-20000", 20_000, 20_000)):
        meta = video_meta(0, frames=8, path=str(video_file), sha=sha)
        if label == "meta-claims-200000":
            meta["counts"]["frames"] = frames_claim
            meta["sampling"]["requested_frames"] = frames_claim
        meta["config"]["decode"]["frames"] = frames_claim if label != "arrays-of-20000" else stored
        tensors = video_tensors(0, frames=stored)
        single(k, label, safetensors_file([("bikes.mp4", meta, tensors)], kind="single"), {"overlay": True})
    meta = video_meta(0, frames=8, path=str(video_file), sha=sha)
    meta["config"]["decode"] = {"fps": 1000.0, "max_frames": None, "decoder": "pyav"}
    meta["sampling"]["requested_frames"] = 200_000
    single(k, "fps-1000-uncapped", safetensors_file([("bikes.mp4", meta, video_tensors(0))], kind="single"),
           {"overlay": True})
    return kinds


def _replace_header(data: bytes, new_header: bytes) -> bytes:
    n = int.from_bytes(data[:8], "little")
    new_header += b" " * (-len(new_header) % 8)
    return len(new_header).to_bytes(8, "little") + new_header + data[8 + n:]


def _add_top_level(data: bytes, key: str, raw_json: str) -> bytes:
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n].rstrip()
    return _replace_header(data, header[:-1] + b', "' + key.encode() + b'": ' + raw_json.encode() + b"}")


def _replace_metadata(data: bytes, replacement: str) -> bytes:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = "PLACEHOLDER"
    raw = json.dumps(header).replace('"PLACEHOLDER"', replacement).encode()
    return _replace_header(data, raw)


# -- running --------------------------------------------------------------------------------------

API_SNIPPET = r"""
import os, sys
from aot_cli.cache import CacheError, TokenCache
path, cut = sys.argv[1], int(sys.argv[2])
seen = []
try:
    cache = TokenCache(path)
    for vid in list(cache):
        seen.append(vid)
        try:
            video = cache[vid]
            video.meta
            if cut >= 0:
                for shard in os.listdir(os.path.join(path, "shards")):
                    os.truncate(os.path.join(path, "shards", shard), cut)
                cut = -1
            for name in video.names:
                video[name]
        except CacheError:
            pass
        cache.lookup(vid)
    cache.entries(); cache.failures()
    print("IDS", repr(seen))
    print("RESULT ok")
except CacheError as exc:
    print("IDS", repr(seen))
    print("RESULT cacheerror", str(exc)[:200].encode("unicode_escape").decode())
except BaseException as exc:
    print("RESULT other", type(exc).__name__, str(exc)[:200].encode("unicode_escape").decode())
    sys.exit(3)
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def run(cmd: List[str], cwd: Path, timeout: float) -> Tuple[str, int, str, str, float]:
    """(outcome, returncode, stdout, stderr, seconds); outcome "timeout" or "done"."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            preexec_fn=_limit_memory, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        outcome = "done"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        outcome = "timeout"
    return (outcome, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
            time.monotonic() - t0)


def check_api(python: str, cwd: Path, path: Path, opts: dict, timeout: float) -> List[str]:
    cut = opts.get("truncate_shard_to", -1)
    outcome, rc, out, err, _ = run([python, "-c", API_SNIPPET, str(path), str(cut)], cwd, timeout)
    if outcome == "timeout":
        return [f"library: no end within {timeout:g} s"]
    if rc != 0 or "RESULT other" in out or "RESULT" not in out:
        tail = (out.strip().splitlines() or err.strip().splitlines() or [""])[-1]
        return [f"library: exit {rc}: {tail[:160]}"]
    if OUTSIDE_ID in out:
        return ["library: listed a video from outside the cache"]
    return []


def check_cli(python: str, cwd: Path, path: Path, opts: dict, timeout: float, work: Path) -> List[str]:
    cmd = [python, "-m", "aot_cli.cli", "inspect", str(path)]
    if opts.get("overlay"):
        cmd += ["--overlay", str(work / f"{path.name}.png")]
    outcome, rc, out, err, seconds = run(cmd, cwd, timeout)
    problems = []
    if outcome == "timeout":
        return [f"inspect: no end within {timeout:g} s"]
    if rc not in (0, 1, 2):
        problems.append(f"inspect: exit status {rc}")
    if "Traceback" in err:
        problems.append("inspect: traceback: " + err.strip().splitlines()[-1][:120])
    lines = [l for l in err.splitlines() if l.strip()]
    if len(lines) > 3:
        problems.append(f"inspect: {len(lines)} stderr lines")
    raw = [repr(c) for c in RAW_CONTROLS if c in out or c in err]
    if raw:
        problems.append("inspect: raw " + ", ".join(raw) + " in the output")
    if OUTSIDE_ID in out:
        problems.append("inspect: listed a video from outside the cache")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter with aot_cli installed")
    parser.add_argument("--cwd", default=str(HERE), help="directory to run it in (the checkout under test)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per run (default 30)")
    parser.add_argument("--kinds", help="comma-separated kinds to run (default all)")
    parser.add_argument("--verbose", action="store_true", help="print the problems of each input")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON too")
    args = parser.parse_args()
    video = HERE / "samples" / "bikes.mp4"
    with tempfile.TemporaryDirectory(prefix="aot-hostile-") as tmp:
        work = Path(tmp)
        shutil.copyfile(video, work / "bikes.mp4")
        (work / "inputs").mkdir()
        kinds = build_inputs(work / "inputs", work / "bikes.mp4")
        wanted = set(args.kinds.split(",")) if args.kinds else None
        counts = OrderedDict()
        for kind, inputs in kinds.items():
            if wanted and kind not in wanted:
                continue
            clean = 0
            for name, path, opts in inputs:
                problems = check_api(args.python, Path(args.cwd), path, opts, args.timeout)
                if "truncate_shard_to" not in opts:
                    problems += check_cli(args.python, Path(args.cwd), path, opts, args.timeout, work)
                clean += not problems
                if args.verbose:
                    print(f"{kind:22s} {name:32s} {'clean' if not problems else '; '.join(problems)}", flush=True)
            counts[kind] = (len(inputs), clean)
    print(f"\n{'kind':22s} {'tried':>6s} {'clean':>6s}")
    for kind, (tried, clean) in counts.items():
        print(f"{kind:22s} {tried:6d} {clean:6d}")
    total = [sum(v[0] for v in counts.values()), sum(v[1] for v in counts.values())]
    print(f"{'all':22s} {total[0]:6d} {total[1]:6d}")
    if args.json:
        print(json.dumps({k: {"tried": t, "clean": c} for k, (t, c) in counts.items()}))


if __name__ == "__main__":
    main()
