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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import torch

from .errors import CacheError

FORMAT_VERSION = 1
FORMAT_KEY = "aot_format"
KIND_KEY = "aot_kind"
CREATED_KEY = "aot_created_at"
VIDEOS_KEY = "aot_videos"
MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses larger headers
HEADER_BUDGET = MAX_HEADER_BYTES // 4  # a writer closes a shard before its header grows past this

_DTYPE_CODES: Dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
for _name, _code in (("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64"),
                     ("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")):
    if hasattr(torch, _name):
        _DTYPE_CODES[getattr(torch, _name)] = _code


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


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors dtype code of a torch dtype; ValueError for dtypes safetensors cannot hold."""
    try:
        return _DTYPE_CODES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype} cannot be stored in safetensors") from None


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a contiguous CPU tensor, without copying."""
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


@dataclass
class VideoRecord:
    """One video to store: its id, tensors (contiguous, on the CPU), and its meta both as a JSON
    string and as the dict parsed back from it (a private copy of the caller's meta)."""

    video_id: str
    tensors: Dict[str, torch.Tensor]
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
    order: List[Tuple[str, torch.Tensor]] = []
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


@dataclass
class FileHeader:
    """What the header of an aot safetensors file says. ``videos``: key → {"id", "meta"};
    ``tensors``: stored tensor name → {"dtype", "shape", "data_offsets"}."""

    path: Path
    kind: str
    created_at: str
    videos: Dict[str, dict]
    tensors: Dict[str, dict]

    def names_of(self, key: str) -> List[str]:
        """The tensor names (without the ``v{k}.`` prefix) stored for video ``key``."""
        prefix = key + "."
        return [s[len(prefix):] for s in self.tensors if s.startswith(prefix)]


def read_header(path: Path) -> FileHeader:
    """Read and check the header of ``path``. Raises :class:`CacheError` (one line, naming the
    path) for a missing/unreadable file, a file that is not safetensors, a safetensors file that is
    not an aot cache, a damaged or truncated file, or a format version newer than this code."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            prefix = f.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
            raw = f.read(length) if 0 < length <= MAX_HEADER_BYTES else b""
    except FileNotFoundError:
        raise CacheError(f"{path}: no such file") from None
    except OSError as exc:
        raise CacheError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(prefix) < 8 or not 2 <= length <= MAX_HEADER_BYTES or not raw.startswith(b"{"):
        raise CacheError(f"{path}: not a safetensors file")
    if len(raw) < length:
        raise CacheError(f"{path}: damaged or truncated safetensors file "
                         f"(header needs {length} bytes, file ends after {len(raw)})")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CacheError(f"{path}: damaged safetensors file (header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise CacheError(f"{path}: not a safetensors file")
    metadata = header.pop("__metadata__", None) or {}
    _check_data_section(path, header, size - 8 - length)
    return _parse_aot_metadata(path, metadata, header)


def _check_data_section(path: Path, tensors: Mapping[str, object], data_size: int) -> None:
    end = 0
    for name, info in tensors.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CacheError(f"{path}: damaged safetensors file (bad entry for tensor {name!r})")
        end = max(end, offsets[1])
    if end > data_size:
        raise CacheError(f"{path}: truncated safetensors file (tensors need {end} bytes of data, "
                         f"the file holds {data_size})")


def _parse_aot_metadata(path: Path, metadata: object, tensors: Dict[str, dict]) -> FileHeader:
    if not isinstance(metadata, dict) or FORMAT_KEY not in metadata:
        raise CacheError(f"{path}: not an aot token cache (safetensors file without "
                         f"'{FORMAT_KEY}' metadata)")
    try:
        version = int(metadata[FORMAT_KEY])
    except (TypeError, ValueError):
        raise CacheError(f"{path}: damaged aot metadata ({FORMAT_KEY}={metadata[FORMAT_KEY]!r})") from None
    check_version(path, version)
    try:
        videos = json.loads(metadata.get(VIDEOS_KEY, ""))
    except (TypeError, json.JSONDecodeError):
        raise CacheError(f"{path}: damaged aot metadata ('{VIDEOS_KEY}' is not valid JSON)") from None
    if not isinstance(videos, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("id"), str) for v in videos.values()):
        raise CacheError(f"{path}: damaged aot metadata ('{VIDEOS_KEY}' lacks video ids)")
    return FileHeader(path=path, kind=str(metadata.get(KIND_KEY, "shard")),
                      created_at=str(metadata.get(CREATED_KEY, "")), videos=videos, tensors=tensors)


def check_version(path: Path, version: int) -> None:
    """Raise :class:`CacheError` when ``version`` is newer than :data:`FORMAT_VERSION`."""
    if version > FORMAT_VERSION:
        raise CacheError(f"{path}: cache format version {version} is newer than this aot-cli reads "
                         f"(up to {FORMAT_VERSION}); upgrade aot-cli")
