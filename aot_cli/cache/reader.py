"""Reading the cache: :class:`TokenCache` over a cache directory or a single aot safetensors file,
and :class:`CachedVideo`, one video whose tensors are read from its file on access.

Everything read is checked before it is trusted (README "Cache format", "What the reader
checks"): sizes and nesting of every JSON document, the types of every field used, tensor
entries against the file, and the dtypes and shapes of the standard tensors. A damaged entry
makes only that video unreadable (``cache[id]`` raises its one-line :class:`CacheError`); the
others stay readable. Tensors are read with plain ``pread`` calls, not a memory map, so a file
cut short by another process while it is read gives a CacheError, never SIGBUS. Only
:class:`CacheError` (and its KeyError subclasses for unknown ids or tensor names) is raised for
damaged or hostile input. torch is imported only when a torch tensor is asked for
(``video.tokens``, ``video["kind"]``); ``video.array(name)`` gives numpy arrays without it.
"""
from __future__ import annotations

import os
import stat
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from .atomic import is_temp_name
from .errors import CacheError, UnknownTensorError, UnknownVideoError, describe_os_error
from .format import DTYPES, FileHeader, read_header, segment_offsets, tensor_name
from .fs import NotRegularError, describe_mode, list_names, open_dir, open_regular, open_regular_path, pread_exact
from .index import MAX_INDEX_BYTES, MAX_INDEX_LINES, MAX_SKIPPED_LINES, MergedIndex, Row, merge_rows, read_part
from .layout import INDEX, INDEX_SUFFIX, SHARDS, ok_row, read_manifest

if TYPE_CHECKING:
    import torch

_OPEN_SHARDS = 16  # shard files kept open by one TokenCache
_OPEN_HEADER_BYTES = 256 << 20  # and at most this many bytes of their headers
_KEPT_REASONS = 20  # skipped-row reasons kept for reports (all are counted)
_RELIST_TRIES = 4  # index listings tried while parts vanish underneath (a compaction in progress)
IndexRow = Dict[str, Any]


class ShardFile:
    """One segment of an opened aot safetensors file: the file's descriptor and the segment's
    checked header (``offset``: where the segment starts; 0 for a single-video file and the first
    segment of a shard). Opening reads only the header; tensor bytes are read (``pread``) when a
    tensor is asked for."""

    def __init__(self, fd: int, path: Path, offset: int = 0) -> None:
        self._fd = fd
        self.path = path
        try:
            self.header: FileHeader = read_header(fd, path, offset)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_in_cache(cls, directory: Path, name: str, offset: int = 0) -> "ShardFile":
        """The segment at ``offset`` of ``directory/shards/name``, opened without following links
        (see :mod:`.fs`)."""
        return cls(open_regular(directory, [SHARDS, name]), directory / SHARDS / name, offset)

    @classmethod
    def open_file(cls, path: Path, offset: int = 0) -> "ShardFile":
        """A file named by the caller (a link to a regular file is fine)."""
        return cls(open_regular_path(path), path, offset)

    def reopen(self, offset: int) -> "ShardFile":
        """The segment at ``offset`` of the same open file (its own descriptor)."""
        return ShardFile(os.dup(self._fd), self.path, offset)

    def read(self, key: str, name: str) -> Tuple[bytearray, Any]:
        """The raw bytes of tensor ``name`` of video ``key`` and its entry; CacheError when the
        file no longer holds them."""
        stored = tensor_name(key, name)
        entry = self.header.tensors[stored]
        if self._fd < 0:
            raise CacheError(f"{self.path}: the file was closed")
        data = pread_exact(self._fd, entry.end - entry.start, self.header.data_start + entry.start,
                           self.path, f"tensor {stored!r}")
        return data, entry

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


def _numpy_array(data: bytearray, entry) -> np.ndarray:
    """The tensor's bytes as a numpy array (bf16 widened to float32, exactly)."""
    dtype = DTYPES[entry.dtype]
    if dtype.numpy is not None:
        return np.frombuffer(data, dtype=np.dtype(dtype.numpy)).reshape(entry.shape)
    if entry.dtype == "BF16":
        halves = np.frombuffer(data, dtype="<u2").astype("<u4") << 16
        return halves.view("<f4").reshape(entry.shape)
    raise TypeError(f"{dtype.torch} tensors have no numpy dtype; read them as torch tensors")


def _torch_tensor(data: bytearray, entry) -> "torch.Tensor":
    import torch

    dtype = getattr(torch, DTYPES[entry.dtype].torch)
    if not data:
        return torch.empty(entry.shape, dtype=dtype)
    return torch.frombuffer(data, dtype=dtype).reshape(entry.shape)


class CachedVideo:
    """One cached video. ``id``, ``row`` (its index row) and ``meta`` come from the headers; each
    tensor is read from the shard file the first time it is accessed (``video.tokens``,
    ``video["segments"]``, ``video.tensors([...])``) and kept by this object afterwards.

    Standard tensors (their dtypes and shapes are checked when the video is opened): ``tokens``
    [T, D] (bf16/fp16/fp32), ``frame``/``index`` int32 [T], ``kind`` uint8 [T], per-frame [F]
    tensors, ``segments`` [S, 2], masks [F, N]; any other stored tensor by name (``names`` lists
    them). ``video[name]`` gives a torch tensor (torch is imported then), ``video.array(name)`` a
    numpy array (no torch). Both raise :class:`CacheError` when the file changed underneath."""

    def __init__(self, shard: ShardFile, key: str, row: IndexRow) -> None:
        self.id: str = row["id"]
        self.row = row
        self.key = key
        self._shard = shard
        self._loaded: Dict[str, "torch.Tensor"] = {}
        self._arrays: Dict[str, np.ndarray] = {}

    @property
    def path(self) -> Path:
        """The safetensors file holding this video."""
        return self._shard.path

    @property
    def meta(self) -> Dict[str, Any]:
        """The meta stored with the video (video info, model, method config, counts…); a dict."""
        return self._shard.header.videos[self.key]["meta"]

    @property
    def names(self) -> List[str]:
        """Names of the stored tensors, from the header (nothing is read)."""
        return self._shard.header.names_of(self.key)

    @property
    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Shape of each stored tensor, from the header (nothing is read)."""
        entries = self._shard.header.tensors
        return {n: entries[tensor_name(self.key, n)].shape for n in self.names}

    def dtype_name(self, name: str) -> str:
        """The torch name of tensor ``name``'s dtype (``"bfloat16"``), from the header."""
        self._check_name(name)
        return DTYPES[self._shard.header.tensors[tensor_name(self.key, name)].dtype].torch

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and tensor_name(self.key, name) in self._shard.header.tensors

    def _check_name(self, name: str) -> None:
        if name not in self:
            raise UnknownTensorError(f"{self.path}: video {self.id!r} has no tensor {name!r} "
                                     f"(it has: {', '.join(self.names)})")

    def __getitem__(self, name: str) -> "torch.Tensor":
        if name not in self._loaded:
            self._check_name(name)
            self._loaded[name] = _torch_tensor(*self._shard.read(self.key, name))
        return self._loaded[name]

    def get(self, name: str, default: Any = None) -> Any:
        """``video[name]``, or ``default`` when the video has no tensor ``name``."""
        return self[name] if name in self else default

    def array(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a read-only numpy array (little-endian; bfloat16 widened exactly to
        float32; float8 raises TypeError). Needs no torch."""
        if name not in self._arrays:
            self._check_name(name)
            array = _numpy_array(*self._shard.read(self.key, name))
            array.flags.writeable = False
            self._arrays[name] = array
        return self._arrays[name]

    def tensors(self, names: Optional[Iterable[str]] = None) -> Dict[str, "torch.Tensor"]:
        """The named tensors (all of them when ``names`` is None), name → tensor."""
        return {n: self[n] for n in (self.names if names is None else names)}

    @property
    def tokens(self) -> "torch.Tensor":
        """The compressed visual tokens, [T, D]."""
        return self["tokens"]

    @property
    def frame(self) -> "torch.Tensor":
        """Sampled-frame number of each token, int32 [T]."""
        return self["frame"]

    @property
    def index(self) -> "torch.Tensor":
        """Position of each token in its frame's pooled grid, int32 [T]."""
        return self["index"]

    @property
    def kind(self) -> "torch.Tensor":
        """What each token is (keyframe / kept / merged anchor…), uint8 [T]."""
        return self["kind"]

    def meta_value(self, dotted: str, kind: str) -> Any:
        """The meta field at ``dotted`` (``"counts.ratio"``), None when it or a parent is absent.
        ``kind``: "number" (finite int or float), "int" (non-negative integer), "str", "dict" or
        "grid" (a list of two positive integers). CacheError naming the file, the video and the
        field when the value (or a parent) has another type."""
        value: Any = self.meta
        walked: List[str] = []
        for part in dotted.split("."):
            if value is None:
                return None
            if not isinstance(value, dict):
                raise CacheError(f"{self.path}: video {self.id!r}: meta field {'.'.join(walked)!r} is a "
                                 f"JSON {type(value).__name__}, not an object")
            walked.append(part)
            value = value.get(part)
        if value is None or _is_kind(value, kind):
            return value
        raise CacheError(f"{self.path}: video {self.id!r}: meta field {dotted!r} is "
                         f"{str(value)[:40]!r}, not {_KIND_WORDS[kind]}")

    def __repr__(self) -> str:
        shape = self.shapes.get("tokens")
        return f"CachedVideo(id={self.id!r}, tokens={list(shape) if shape else None}, file={self.path.name!r})"


_KIND_WORDS = {"number": "a number", "int": "a non-negative integer", "str": "a string", "dict": "an object",
               "grid": "a list of two positive integers"}


def _is_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "number":
        return isinstance(value, (int, float))
    if kind == "int":
        return isinstance(value, int) and value >= 0
    if kind == "grid":
        return (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
    return isinstance(value, {"str": str, "dict": dict}[kind])


def _first_five(ids: List[str]) -> str:
    """Up to five of ``ids``, quoted and comma-separated, with " ..." when there are more."""
    return ", ".join(repr(i) for i in ids[:5]) + (" ..." if len(ids) > 5 else "")


class TokenCache:
    """A token cache opened for reading: a cache directory (all index parts read as one cache) or a
    single aot safetensors file (``write_single`` output, or one shard).

    Mapping-like over video ids: ``len(cache)``, ``iter(cache)``/``cache.ids()`` (commit order),
    ``video_id in cache``, ``cache[video_id]`` → :class:`CachedVideo`. ``entries()`` gives the
    index rows of the cached videos, ``failures()`` those of videos whose latest attempt failed,
    ``lookup(id)`` one row for resuming. The index is read once when the cache is opened
    (``refresh()`` reads it again).

    What could not be used is reported, not raised: ``skipped_lines`` (index lines that are not
    well-formed rows, e.g. a torn append) with ``skipped_rows`` (the first reasons, one line each),
    ``missing_shards`` (shards that rows name but that do not exist) and ``ignored`` (one-line
    notes: index parts or shards that are links or special files, video-table entries without a
    usable id). ``max_index_bytes`` bounds the bytes of all index parts together (CacheError when
    exceeded). Only :class:`CacheError` is raised for damaged or hostile input."""

    def __init__(self, path: Union[str, Path], *, max_index_bytes: int = MAX_INDEX_BYTES) -> None:
        self.path = Path(path)
        self.max_index_bytes = max_index_bytes
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            raise CacheError(f"{self.path}: no such file or directory") from None
        except (OSError, ValueError) as exc:
            cause = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            raise CacheError(f"{self.path}: cannot open: {cause}") from None
        self.is_directory = stat.S_ISDIR(mode)
        if not self.is_directory and not stat.S_ISREG(mode):
            raise NotRegularError(f"{self.path}: not a regular file or a cache directory")
        self.manifest: Dict[str, Any] = {}
        self.skipped_lines = 0
        self.skipped_rows: List[str] = []
        self.missing_shards: List[str] = []
        self.ignored: List[str] = []
        self.skipped_by_part: Dict[str, List[int]] = {}
        self._shards: "OrderedDict[Tuple[Optional[str], int], ShardFile]" = OrderedDict()
        self._broken: Dict[Tuple[Optional[str], int], str] = {}  # segments that could not be opened, until refresh()
        self._ok: Dict[str, Row] = {}
        self._failed: Dict[str, Row] = {}
        self._merged = MergedIndex(rows=[])
        self._refreshed_for: Optional[str] = None
        self.refresh()

    # -- loading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """(Re)read the manifest and index, picking up videos committed since."""
        self.skipped_lines, self.skipped_rows, self.missing_shards, self.ignored = 0, [], [], []
        self.skipped_by_part = {}
        self._broken.clear()
        if self.is_directory:
            self.manifest = read_manifest(self.path)
            self._load_index()
        else:
            self._drop(None)  # the file may have been replaced
            self._load_file()

    def _load_file(self) -> None:
        """A lone file: every video of every segment (a later segment's copy of an id wins); a
        tail that is not a whole segment (never committed) is noted in ``ignored``."""
        self._ok, self._failed = {}, {}
        fd = open_regular_path(self.path)
        try:
            segments = list(segment_offsets(fd, self.path))
        finally:
            os.close(fd)
        for offset, header, problem in segments:
            if header is None:
                self.ignored.append(f"{problem}; the bytes from {offset} on are not a whole segment (not read)")
                continue
            keys = sorted(set(header.videos) | set(header.bad), key=_key_number)
            for key in keys:
                if key in header.videos:
                    vid, meta = header.videos[key]["id"], header.videos[key]["meta"]
                else:
                    vid, message = header.bad[key]
                    if vid is None:
                        self.ignored.append(message)
                        continue
                    meta = {}
                entry = header.tensors.get(tensor_name(key, "tokens"))
                data = ok_row(vid, self.path.name, key, entry.shape if entry else None, meta, header.created_at,
                              offset=offset)
                self._ok.pop(vid, None)
                self._ok[vid] = Row(data)
        self._merged = MergedIndex(rows=list(self._ok.values()), ok=dict(self._ok))

    def _load_index(self) -> None:
        """Merge every ``index/*.jsonl`` part (:func:`~.index.merge_rows`): rows in commit order
        (``committed_at``, then part, then line); per id the last ok row whose shard file exists
        wins; a failure row counts as the id's latest attempt. Lines that are not well-formed rows
        are skipped and counted. A missing shard is reported unless every row naming it was
        superseded by a later ok row of the same id (a video computed again after its shard was
        lost)."""
        rows = self._read_rows()
        usable = self._usable_shards({row.shard for row in rows if row.ok})
        merged = merge_rows(rows, usable.__getitem__)
        self._merged = merged
        self._ok = merged.ok
        self._failed = merged.failed
        self.missing_shards = merged.missing_shards

    def _read_rows(self) -> List[Row]:
        """Well-formed rows of every index part, in commit order; counts and notes the rest. A
        part that vanishes between listing and reading (``aot compact`` replaced it, after writing
        its successor) makes the listing start again, so no row is missed."""
        for _ in range(_RELIST_TRIES - 1):
            try:
                return self._read_listed_rows(vanished_ok=False)
            except _PartVanished:
                self.skipped_lines, self.skipped_rows, self.ignored = 0, [], []
                self.skipped_by_part = {}
        return self._read_listed_rows(vanished_ok=True)

    def _read_listed_rows(self, vanished_ok: bool) -> List[Row]:
        keyed: List[Tuple[Tuple[str, str, int], Row]] = []
        total = total_lines = 0
        for name in list_names(self.path, [INDEX]):
            if not name.endswith(INDEX_SUFFIX) or name.startswith(".") or is_temp_name(name):
                continue
            try:
                fd = open_regular(self.path, [INDEX, name])
            except FileNotFoundError:
                if vanished_ok:
                    continue  # removed meanwhile
                raise _PartVanished(name) from None
            except NotRegularError as exc:
                self.ignored.append(f"{exc}; not read")
                continue
            try:
                total += os.fstat(fd).st_size
                if total > self.max_index_bytes:
                    raise CacheError(f"{self.path / INDEX}: the index parts hold more than "
                                     f"{self.max_index_bytes} bytes (the limit of this reader; "
                                     "TokenCache(max_index_bytes=...) raises it)")
                part = name[: -len(INDEX_SUFFIX)]
                rows, skipped, lines = read_part(fd, self.path / INDEX / name, part=part)
            finally:
                os.close(fd)
            keyed.extend(((row.committed_at, name, number), row) for number, row in rows)
            self.skipped_lines += len(skipped)
            if skipped:
                self.skipped_by_part[part] = [number for number, _ in skipped]
            total_lines += lines
            if total_lines > MAX_INDEX_LINES or self.skipped_lines > MAX_SKIPPED_LINES:
                raise CacheError(f"{self.path / INDEX}: the index parts hold more than {MAX_INDEX_LINES} lines "
                                 f"or more than {MAX_SKIPPED_LINES} lines that are not rows; not a cache this "
                                 "reader accepts")
            room = _KEPT_REASONS - len(self.skipped_rows)
            self.skipped_rows.extend(f"{INDEX}/{name} line {number + 1}: {reason}" for number, reason in skipped[:room])
        keyed.sort(key=lambda item: item[0])
        return [row for _, row in keyed]

    def _usable_shards(self, names: Iterable[str]) -> Dict[str, str]:
        """For each shard file name: "ok" (a regular file), "missing", or "refused" (a link or a
        special file; noted in ``ignored``). ``shards/`` itself must be a real directory."""
        names = sorted(names)
        if not names:
            return {}
        try:
            fd = open_dir(self.path, [SHARDS])
        except FileNotFoundError:
            return {name: "missing" for name in names}
        states = {}
        try:
            for name in names:
                try:
                    mode = os.lstat(name, dir_fd=fd).st_mode
                except FileNotFoundError:
                    states[name] = "missing"
                    continue
                except OSError as exc:
                    raise CacheError(f"{self.path / SHARDS / name}: {describe_os_error(exc)}") from None
                if stat.S_ISREG(mode):
                    states[name] = "ok"
                else:
                    states[name] = "refused"
                    self.ignored.append(f"{self.path / SHARDS / name}: {describe_mode(mode)}; not read")
        finally:
            os.close(fd)
        return states

    def segment(self, name: Optional[str], offset: int = 0) -> ShardFile:
        """The opened segment at ``offset`` of shard ``name`` (None: the lone file), kept in a
        small least-recently-used set bounded by count and header bytes. CacheError when it cannot
        be opened (remembered until :meth:`refresh`)."""
        slot = (name, offset)
        shard = self._shards.pop(slot, None)
        if shard is None:
            if slot in self._broken:  # many rows may name one damaged segment: read it once
                raise CacheError(self._broken[slot])
            try:
                shard = ShardFile.open_file(self.path, offset) if name is None \
                    else ShardFile.open_in_cache(self.path, name, offset)
            except CacheError as exc:
                if not isinstance(exc, FileNotFoundError):
                    self._broken[slot] = str(exc)
                raise
        self._shards[slot] = shard
        while len(self._shards) > 1 and (len(self._shards) > _OPEN_SHARDS or sum(
                s.header.size for s in self._shards.values()) > _OPEN_HEADER_BYTES):
            self._shards.popitem(last=False)
        return shard

    def _drop(self, name: Optional[str]) -> None:
        for slot in [slot for slot in self._shards if slot[0] == name]:
            self._shards.pop(slot, None)
        for slot in [slot for slot in self._broken if slot[0] == name]:
            self._broken.pop(slot, None)

    # -- mapping API --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ok)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ok))

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._ok

    def ids(self) -> List[str]:
        """Ids of the cached videos, in commit order."""
        return list(self._ok)

    def find(self, name: str) -> Optional[str]:
        """The id ``name`` names: the id itself, else the one id whose last path components are
        ``name`` (``bikes.mp4`` finds ``samples/bikes.mp4`` when no other id ends that way);
        None when there is none or more than one."""
        if name in self._ok:
            return name
        matches = self._ending_with(name)
        return matches[0] if len(matches) == 1 else None

    def _ending_with(self, name: str) -> List[str]:
        """The cached ids whose last path components are ``name``."""
        return [i for i in self._ok if i.endswith("/" + name.lstrip("/"))]

    def resolve(self, name: Optional[str]) -> str:
        """The id of the one video ``name`` means: :meth:`find` (the id itself, or a file name
        only one id ends with); with ``name`` None, the only video of a one-video cache. Raises
        :class:`UnknownVideoError` (one line: why, and up to five of the cached ids) otherwise."""
        if name is None:
            if len(self._ok) == 1:
                return next(iter(self._ok))
            raise UnknownVideoError(f"{self.path}: holds {len(self._ok)} videos; choose one with --video "
                                    f"({self._some_ids()})")
        found = self.find(name) if isinstance(name, str) else None
        if found is not None:
            return found
        if isinstance(name, str) and name not in self._failed:
            matches = self._ending_with(name)
            if len(matches) > 1:
                raise UnknownVideoError(f"{self.path}: {name!r} could mean {len(matches)} videos "
                                        f"({_first_five(matches)}); give the whole id")
        raise UnknownVideoError(self._unknown_message(name))

    def _some_ids(self) -> str:
        """Up to five cached ids, quoted, for an error message."""
        return "ids: " + (_first_five(list(self._ok)) if self._ok else "none")

    def __getitem__(self, video_id: str) -> CachedVideo:
        row = self._ok.get(video_id) if isinstance(video_id, str) else None
        if row is None:
            raise UnknownVideoError(self._unknown_message(video_id))
        try:
            shard = self.segment(row.shard if self.is_directory else None, row.offset)
        except FileNotFoundError as exc:
            if not self.is_directory or self._refreshed_for == video_id:
                raise CacheError(f"{exc} (reading video {video_id!r})") from None
            # the shard is gone since the index was read (``aot compact`` rewrote it): read the
            # index again, once, and follow the video to where it is now
            self._refreshed_for = video_id
            try:
                self.refresh()
                return self[video_id]
            finally:
                self._refreshed_for = None
        except CacheError as exc:
            raise CacheError(f"{exc} (reading video {video_id!r})") from None
        header = shard.header
        if row.key in header.bad:
            raise CacheError(header.bad[row.key][1])
        stored = header.videos.get(row.key)
        if stored is None or stored["id"] != video_id:
            raise CacheError(f"{header.where}: index row of {video_id!r} points to {row.key!r}, which "
                             f"holds {stored['id'] if stored else None!r}")
        return CachedVideo(shard, row.key, row.data())

    def _unknown_message(self, video_id: object) -> str:
        failed = self._failed.get(video_id) if isinstance(video_id, str) else None
        if failed is not None:
            data = failed.data()
            return (f"{self.path}: video {video_id!r} is not cached: it failed "
                    f"({failed.status!r}: {str(data.get('error'))!r})")
        count = len(self._ok)
        return (f"{self.path}: no video with id {video_id!r} ({count} cached, "
                f"{self._some_ids()})")

    # -- index rows ---------------------------------------------------------------------------
    def entries(self) -> List[IndexRow]:
        """Index rows of the cached videos (status "ok"), in commit order: ``id``, ``shard``,
        ``key``, ``num_tokens``, ``sha256``, ``config_fingerprint``, ``meta``, ``committed_at``."""
        return [row.data() for row in self._ok.values()]

    def failures(self) -> List[IndexRow]:
        """Rows of videos whose latest attempt failed (status other than "ok"): ``id``, ``status``,
        ``error``, ``path``, ``sha256``, ``config_fingerprint``, ``meta``, ``committed_at``. A video
        that failed and was later cached is not listed; one cached and later failed is listed (and
        still readable)."""
        return [row.data() for row in self._failed.values()]

    def lookup(self, video_id: str) -> Optional[IndexRow]:
        """For resuming: the video's ok row if it is cached, else its latest failure row, else
        None. Compare ``row["sha256"]``/``row["config_fingerprint"]`` to decide to skip it."""
        row = self._ok.get(video_id) or self._failed.get(video_id)
        return row.data() if row is not None else None

    def merged_index(self) -> MergedIndex:
        """Every well-formed row as read, merged (:class:`~.index.MergedIndex`): which row of each
        id is read, which are superseded. Used by ``aot compact`` and the storage report."""
        return self._merged

    def problems(self) -> List[str]:
        """One line per thing the cache holds that could not be used (skipped index rows, missing
        shards, ignored files), for reports; empty for a clean cache."""
        lines = list(self.ignored)
        if self.skipped_lines:
            lines.append(f"{self.path}: skipped {self.skipped_lines} index row(s) that are not well-formed"
                         + (f" (first: {self.skipped_rows[0]})" if self.skipped_rows else ""))
        if self.missing_shards:
            shown = ", ".join(self.missing_shards[:3]) + (" ..." if len(self.missing_shards) > 3 else "")
            lines.append(f"{self.path}: {len(self.missing_shards)} shard(s) named by the index are missing: {shown}")
        return lines

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the open shard handles (videos already returned keep theirs)."""
        self._shards.clear()

    def __enter__(self) -> "TokenCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "directory" if self.is_directory else "file"
        return f"TokenCache({str(self.path)!r}, {kind}, videos={len(self)}, failures={len(self._failed)})"


class _PartVanished(Exception):
    """An index part listed a moment ago is gone (internal: the listing is read again)."""


def _key_number(key: str) -> Tuple[int, str]:
    digits = key[1:]
    return (int(digits), key) if key.startswith("v") and digits.isdigit() and len(digits) <= 9 else (1 << 31, key)
