"""The on-disk format of one aot safetensors file (a cache shard or a single-video output).

A standard safetensors file: 8-byte little-endian header length, a JSON header, then the raw tensor
bytes. Tensors of the video stored under key ``v{k}`` are named ``v{k}.<name>`` (``v0.tokens``,
``v0.frame``…); ``k`` numbers the videos inside the file, so video ids (which may contain '/', '.'
or any unicode) never appear in tensor names. The header's ``__metadata__`` (string → string) holds:

- ``aot_format``      the format version (``"1"``)
- ``aot_kind``        ``"shard"`` (part of a cache directory) or ``"single"`` (one video, one file)
- ``aot_created_at``  ISO-8601 UTC time the file was written
- ``aot_videos``      JSON object ``{"v0": {"id": <video id>, "meta": {...}}, ...}``

Files are written by this module's own encoder so a shard streams straight from the tensors to the
file (no second in-memory copy); they are read back with the ``safetensors`` library.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from . import safejson
from .errors import CacheError
from .fs import pread_exact

if TYPE_CHECKING:  # torch is imported only where tensors are written or asked for
    import torch

FORMAT_VERSION = 1
FORMAT_KEY = "aot_format"
KIND_KEY = "aot_kind"
CREATED_KEY = "aot_created_at"
VIDEOS_KEY = "aot_videos"
MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses larger headers
HEADER_BUDGET = MAX_HEADER_BYTES // 4  # a writer closes a shard before its header grows past this
MAX_META_BYTES = 16 << 20  # one video's meta, as JSON; the writer refuses more
MAX_DIMS = 8

# What each ``kind`` value of a cached token means (docs/method.md §8; the same numbers as
# aot_cli.core's KIND_* constants, repeated here so that readers need neither torch nor the method).
KIND_KEYFRAME, KIND_KEPT, KIND_ANCHOR, KIND_NEWLINE = 0, 1, 2, 3
_KEY_RE = re.compile(r"^v[0-9]{1,9}$")


class DType(NamedTuple):
    """A safetensors dtype: its code, numpy dtype string (None: numpy has none), size in bytes and
    the torch dtype name."""

    code: str
    numpy: Optional[str]
    itemsize: int
    torch: str


DTYPES: Dict[str, DType] = {d.code: d for d in (
    DType("F64", "<f8", 8, "float64"), DType("F32", "<f4", 4, "float32"), DType("F16", "<f2", 2, "float16"),
    DType("BF16", None, 2, "bfloat16"), DType("I64", "<i8", 8, "int64"), DType("I32", "<i4", 4, "int32"),
    DType("I16", "<i2", 2, "int16"), DType("I8", "i1", 1, "int8"), DType("U8", "u1", 1, "uint8"),
    DType("U16", "<u2", 2, "uint16"), DType("U32", "<u4", 4, "uint32"), DType("U64", "<u8", 8, "uint64"),
    DType("BOOL", "?", 1, "bool"), DType("F8_E4M3", None, 1, "float8_e4m3fn"),
    DType("F8_E5M2", None, 1, "float8_e5m2"),
)}
_CODE_OF_TORCH_NAME = {d.torch: d.code for d in DTYPES.values()}
FLOATS = frozenset({"F16", "BF16", "F32", "F64"})
INTEGERS = frozenset({"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"})
MASKS = INTEGERS | {"BOOL"}

def utc_now() -> str:
    """The current time as ISO-8601 UTC with microseconds, e.g. ``2026-03-01T12:00:00.123456Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def video_key(k: int) -> str:
    """The key of the ``k``-th video of a file: ``v{k}``."""
    return f"v{k}"


def tensor_name(key: str, name: str) -> str:
    """The stored name of tensor ``name`` of video ``key``: ``v3.tokens``."""
    return f"{key}.{name}"


def split_tensor_name(stored: str) -> Tuple[str, str]:
    """``"v3.tokens"`` → ``("v3", "tokens")`` (tensor names may themselves contain dots)."""
    key, _, name = stored.partition(".")
    return key, name


def dtype_code(dtype: "torch.dtype") -> str:
    """The safetensors dtype code of a torch dtype; ValueError for dtypes safetensors cannot hold."""
    code = _CODE_OF_TORCH_NAME.get(str(dtype).replace("torch.", ""))
    if code is None:
        raise ValueError(f"dtype {dtype} cannot be stored in safetensors")
    return code


def tensor_bytes(tensor: "torch.Tensor") -> memoryview:
    """The raw little-endian bytes of a contiguous CPU tensor, without copying."""
    import torch

    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


@dataclass
class VideoRecord:
    """One video to store: its id, tensors (contiguous, on the CPU), and its meta both as a JSON
    string and as the dict parsed back from it (a private copy of the caller's meta)."""

    video_id: str
    tensors: Dict[str, "torch.Tensor"]
    meta_json: str
    meta: Dict[str, Any]

    @property
    def nbytes(self) -> int:
        """Bytes the video adds to a file: tensor data plus its share of the header."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values()) + self.header_bytes

    @property
    def header_bytes(self) -> int:
        """A generous estimate of the bytes the video adds to a file's JSON header."""
        return len(self.meta_json.encode("utf-8")) + len(self.video_id.encode("utf-8")) \
            + sum(96 + len(n) + 12 * t.dim() for n, t in self.tensors.items())


def encode(videos: Sequence[VideoRecord], kind: str) -> Iterator[memoryview]:
    """The pieces of a safetensors file holding ``videos`` under keys ``v0, v1, …``: the length
    prefix and header first, then each tensor's bytes. Tensors are laid out widest element first, so
    every tensor starts at an offset aligned to its element size."""
    order: List[Tuple[str, "torch.Tensor"]] = []
    listing: Dict[str, dict] = {}
    for k, record in enumerate(videos):
        key = video_key(k)
        listing[key] = {"id": record.video_id, "meta": record.meta}
        order.extend((tensor_name(key, n), t) for n, t in record.tensors.items())
    layout = sorted(order, key=lambda item: -item[1].element_size())  # stable within a width
    offsets: Dict[str, List[int]] = {}
    offset = 0
    for name, t in layout:
        size = t.numel() * t.element_size()
        offsets[name] = [offset, offset + size]
        offset += size
    header: Dict[str, object] = {  # listed in the caller's order; the bytes follow ``layout``
        name: {"dtype": dtype_code(t.dtype), "shape": list(t.shape), "data_offsets": offsets[name]}
        for name, t in order}
    header["__metadata__"] = {
        FORMAT_KEY: str(FORMAT_VERSION), KIND_KEY: kind, CREATED_KEY: utc_now(),
        VIDEOS_KEY: json.dumps(listing, ensure_ascii=False, allow_nan=False, separators=(",", ":")),
    }
    raw = json.dumps(header, separators=(",", ":")).encode("ascii")
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    yield memoryview(len(raw).to_bytes(8, "little") + raw)
    for _, t in layout:
        yield tensor_bytes(t)



# -- reading ----------------------------------------------------------------------------------

class TensorEntry(NamedTuple):
    """One checked tensor entry of a header: dtype code, shape, and its byte range in the data
    section (``start``/``end``, relative to the first byte after the header)."""

    dtype: str
    shape: Tuple[int, ...]
    start: int
    end: int


@dataclass
class FileHeader:
    """What the header of an aot safetensors file says, checked.

    ``videos``: key → {"id": str, "meta": dict} for every well-formed video; ``bad``: key →
    (id or None, one-line message) for entries that cannot be read (wrong types, malformed or
    inconsistent tensor entries); ``tensors``: stored tensor name → :class:`TensorEntry` of the
    well-formed videos; ``data_start``: file offset of the data section; ``size``: header bytes."""

    path: Path
    kind: str
    created_at: str
    videos: Dict[str, dict]
    tensors: Dict[str, TensorEntry]
    bad: Dict[str, Tuple[Optional[str], str]] = field(default_factory=dict)
    data_start: int = 8
    size: int = 0
    by_key: Dict[str, List[str]] = field(default_factory=dict)  # key → tensor names, in header order

    def names_of(self, key: str) -> List[str]:
        """The tensor names (without the ``v{k}.`` prefix) stored for video ``key``."""
        return list(self.by_key.get(key, ()))


def read_header(fd: int, path: Path) -> FileHeader:
    """Read and check the header of the open regular file ``fd`` (named ``path`` in messages).

    Raises :class:`CacheError` (one line, naming the path) for a file that is not safetensors, a
    safetensors file that is not an aot cache, a header that is too large, nested too deeply,
    holds non-finite numbers or is not JSON, a truncated file, or a format version newer than this
    code. Problems of one video (its meta or id of the wrong type, a malformed or inconsistent
    tensor entry, a standard tensor of the wrong dtype or shape) do not fail the file: they are
    listed in ``FileHeader.bad``."""
    size = os.fstat(fd).st_size
    prefix = bytes(pread_exact(fd, 8, 0, path, "header", allow_short=True))
    length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
    if len(prefix) < 8 or not 2 <= length <= MAX_HEADER_BYTES:
        raise CacheError(f"{path}: not a safetensors file")
    if 8 + length > size:
        raise CacheError(f"{path}: damaged or truncated safetensors file "
                         f"(header needs {length} bytes, file ends after {max(0, size - 8)})")
    raw = pread_exact(fd, length, 8, path, "header")
    if not raw.startswith(b"{"):
        raise CacheError(f"{path}: not a safetensors file")
    header = safejson.load_or_fail(raw, path, "damaged safetensors file: the header")
    if not isinstance(header, dict):
        raise CacheError(f"{path}: not a safetensors file")
    metadata = header.pop("__metadata__", None)
    data_size = size - 8 - length
    entries, broken = _tensor_entries(path, header)
    end = max((e.end for e in entries.values()), default=0)
    if end > data_size:
        raise CacheError(f"{path}: truncated safetensors file (tensors need {end} bytes of data, "
                         f"the file holds {data_size})")
    result = _parse_aot_metadata(path, metadata, entries)
    result.data_start, result.size = 8 + length, length
    for key, problem in broken.items():
        _mark_bad(result, key, problem)
    for key in list(result.videos):
        problem = check_standard_tensors({n: entries[tensor_name(key, n)] for n in result.names_of(key)})
        if problem:
            _mark_bad(result, key, problem)
    return result


def _mark_bad(header: FileHeader, key: str, problem: str) -> None:
    """Move video ``key`` from ``videos`` to ``bad`` with a message naming file, video and field
    (nothing to do for a key already bad, or tensors of no listed video)."""
    video = header.videos.pop(key, None)
    if video is None:
        return
    for name in header.by_key.pop(key, ()):
        del header.tensors[tensor_name(key, name)]
    header.bad[key] = (video["id"], f"{header.path}: video {video['id']!r} ({key}): {problem}")


def _tensor_entries(path: Path, header: Dict[str, Any]) -> Tuple[Dict[str, TensorEntry], Dict[str, str]]:
    """Checked entries by stored name, and key → problem for videos with a malformed entry."""
    entries: Dict[str, TensorEntry] = {}
    broken: Dict[str, str] = {}
    for name, info in header.items():
        key, tname = split_tensor_name(name)
        problem, entry = _tensor_entry(info)
        if problem:
            broken.setdefault(key, f"tensor {tname!r}: {problem}")
        else:
            entries[name] = entry
    return entries, broken


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor_entry(info: object) -> Tuple[Optional[str], Optional[TensorEntry]]:
    if not isinstance(info, dict):
        return f"entry is a {type(info).__name__}, not an object", None
    code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    dtype = DTYPES.get(code) if isinstance(code, str) else None
    if dtype is None:
        return f"unknown dtype {str(code)[:20]!r}", None
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_is_int(d) and d >= 0 for d in shape)):
        return f"shape {str(shape)[:40]} is not a list of at most {MAX_DIMS} non-negative integers", None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        return f"data_offsets {str(offsets)[:40]} are not [begin, end] with 0 <= begin <= end", None
    if math.prod(shape) * dtype.itemsize != offsets[1] - offsets[0]:
        return (f"shape {shape} of {code} needs {math.prod(shape) * dtype.itemsize} bytes, its data_offsets "
                f"give {offsets[1] - offsets[0]}"), None
    return None, TensorEntry(code, tuple(shape), offsets[0], offsets[1])


def parse_version(value: object) -> Optional[int]:
    """A format version from a header (``"1"``) or cache.json (``1``): a positive integer of at
    most 9 digits, else None."""
    if _is_int(value):
        return value if 0 < value < 10 ** 9 else None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value) and int(value) > 0:
        return int(value)
    return None


def _parse_aot_metadata(path: Path, metadata: object, tensors: Dict[str, TensorEntry]) -> FileHeader:
    if not isinstance(metadata, dict) or FORMAT_KEY not in metadata:
        raise CacheError(f"{path}: not an aot token cache (safetensors file without "
                         f"'{FORMAT_KEY}' metadata)")
    version = parse_version(metadata[FORMAT_KEY])
    if version is None:
        raise CacheError(f"{path}: damaged aot metadata ({FORMAT_KEY}={str(metadata[FORMAT_KEY])[:40]!r} "
                         "is not a positive integer)")
    check_version(path, version)
    listing = metadata.get(VIDEOS_KEY)
    if not isinstance(listing, str):
        raise CacheError(f"{path}: damaged aot metadata ('{VIDEOS_KEY}' is missing or not a string)")
    videos = safejson.load_or_fail(listing, path, f"damaged aot metadata: '{VIDEOS_KEY}'")
    if not isinstance(videos, dict):
        raise CacheError(f"{path}: damaged aot metadata ('{VIDEOS_KEY}' is a {type(videos).__name__}, "
                         "not an object)")
    kind, created = metadata.get(KIND_KEY, "shard"), metadata.get(CREATED_KEY, "")
    header = FileHeader(path=path, kind=kind if isinstance(kind, str) else "shard",
                        created_at=created if isinstance(created, str) else "", videos={}, tensors={})
    for key, video in videos.items():
        vid = video.get("id") if isinstance(video, dict) else None
        vid = vid if isinstance(vid, str) and vid else None
        problem = _video_problem(key, video)
        if problem:
            header.bad[key] = (vid, f"{path}: video {vid!r} ({key}): {problem}" if vid is not None
                               else f"{path}: video table entry {key!r}: {problem}")
            continue
        meta = video.get("meta")
        header.videos[key] = {"id": vid, "meta": {} if meta is None else meta}
    for name, entry in tensors.items():
        key, tname = split_tensor_name(name)
        if key in header.videos:
            header.tensors[name] = entry
            header.by_key.setdefault(key, []).append(tname)
    return header


def _video_problem(key: str, video: object) -> Optional[str]:
    if not _KEY_RE.match(key):
        return "the key is not of the form v<number>"
    if not isinstance(video, dict):
        return f"the entry is a {type(video).__name__}, not an object"
    vid = video.get("id")
    if not isinstance(vid, str) or not vid:
        return f"id is {_type_name(vid)}, not a non-empty string"
    meta = video.get("meta")
    if meta is not None and not isinstance(meta, dict):
        return f"meta is {_type_name(meta)}, not an object"
    return None


def _type_name(value: object) -> str:
    if value is None:
        return "missing"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def check_version(path: Path, version: int) -> None:
    """Raise :class:`CacheError` when ``version`` is newer than :data:`FORMAT_VERSION`."""
    if version > FORMAT_VERSION:
        raise CacheError(f"{path}: cache format version {version} is newer than this aot-cli reads "
                         f"(up to {FORMAT_VERSION}); upgrade aot-cli")


# -- the standard tensors ---------------------------------------------------------------------

#: name → (allowed dtype codes, number of dimensions, what the first dimension counts:
#: "T" tokens, "F" sampled frames, "M" the method's frames (the sampled frames, or a Qwen
#: tower's temporal patches of two frames), "S" segments, "G" groups of per-token rows) of the
#: tensors the pipeline writes (README "Cache format"). Other names are stored and read as they are.
STANDARD_TENSORS: Dict[str, Tuple[frozenset, int, str]] = {
    "tokens": (FLOATS, 2, "T"),
    "frame": (INTEGERS, 1, "T"), "index": (INTEGERS, 1, "T"), "kind": (INTEGERS, 1, "T"),
    "frame_indices": (INTEGERS, 1, "F"), "timestamps": (FLOATS | INTEGERS, 1, "F"),
    "anchors_per_frame": (INTEGERS, 1, "M"), "cells_per_frame": (INTEGERS, 1, "M"),
    "kept_per_frame": (INTEGERS, 1, "M"), "merged_per_frame": (INTEGERS, 1, "M"),
    "anchor_mask": (MASKS, 2, "M"), "cell_mask": (MASKS, 2, "M"),
    "segments": (INTEGERS, 2, "S"),
    "video_grid_thw": (INTEGERS, 1, ""), "deepstack": (FLOATS, 3, "G"),
}
_COUNTS = {"T": "tokens", "F": "sampled frames", "M": "the method's frames"}


def check_standard_tensors(shapes: Dict[str, Any]) -> Optional[str]:
    """The first problem with the standard tensors among ``shapes`` (name → object with
    ``dtype`` code and ``shape``, e.g. :class:`TensorEntry`), or None: wrong dtype family, wrong
    number of dimensions, ``segments`` not [S, 2], or per-token / per-frame tensors whose first
    dimensions differ. Absent tensors are fine."""
    lengths: Dict[str, Tuple[str, int]] = {}
    for name, (codes, dims, axis) in STANDARD_TENSORS.items():
        entry = shapes.get(name)
        if entry is None:
            continue
        shape = tuple(entry.shape)
        if entry.dtype not in codes:
            family = "floating-point" if codes == FLOATS else "integer" if codes <= MASKS else "numeric"
            return f"tensor {name!r} is {DTYPES[entry.dtype].torch}, not {family}"
        if len(shape) != dims:
            return f"tensor {name!r} has shape {list(shape)}, not {dims}-D"
        if name == "segments" and shape[1] != 2:
            return f"tensor 'segments' has shape {list(shape)}, not [S, 2]"
        if name == "video_grid_thw" and shape != (3,):
            return f"tensor 'video_grid_thw' has shape {list(shape)}, not [3]"
        if axis in _COUNTS:
            first = lengths.setdefault(axis, (name, shape[0]))
            if first[1] != shape[0]:
                return (f"tensor {name!r} has {shape[0]} rows but {first[0]!r} has {first[1]} "
                        f"(both count {_COUNTS[axis]})")
    deepstack, tokens = shapes.get("deepstack"), shapes.get("tokens")
    if deepstack is not None and tokens is not None and tuple(deepstack.shape)[1:] != tuple(tokens.shape):
        return (f"tensor 'deepstack' has shape {list(deepstack.shape)}, not [L, T, D] with [T, D] = "
                f"{list(tokens.shape)} of 'tokens'")
    return None
