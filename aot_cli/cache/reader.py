"""Reading the cache: :class:`TokenCache` over a cache directory or a single aot safetensors file,
and :class:`CachedVideo`, one video whose tensors are read from the memory-mapped file on access."""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open

from .atomic import is_temp_name
from .errors import CacheError, UnknownTensorError, UnknownVideoError
from .format import FileHeader, read_header, tensor_name
from .layout import INDEX, INDEX_SUFFIX, ok_row, read_manifest, resolve_shard

_OPEN_SHARDS = 16  # shard files kept open (memory-mapped) at once by one TokenCache
IndexRow = Dict[str, Any]


class ShardFile:
    """One opened aot safetensors file: its checked header and a memory-mapped ``safe_open`` handle.
    Opening reads only the header; tensor bytes are read when a tensor is asked for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: FileHeader = read_header(path)
        try:
            self._handle = safe_open(str(path), framework="pt")
        except (SafetensorError, OSError) as exc:
            raise CacheError(f"{path}: damaged safetensors file ({_first_line(exc)})") from None

    def tensor(self, key: str, name: str) -> torch.Tensor:
        """Tensor ``name`` of the video stored under ``key``."""
        try:
            return self._handle.get_tensor(tensor_name(key, name))
        except (SafetensorError, OSError) as exc:
            raise CacheError(f"{self.path}: cannot read tensor {tensor_name(key, name)!r} "
                             f"({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CachedVideo:
    """One cached video. ``id``, ``row`` (its index row) and ``meta`` come from the headers; each
    tensor is read from the memory-mapped shard the first time it is accessed (``video.tokens``,
    ``video["segments"]``, ``video.tensors([...])``) and kept by this object afterwards.

    Standard tensors: ``tokens`` [T, D] (bf16/fp16/fp32), ``frame``/``index`` int32 [T],
    ``kind`` uint8 [T]; any other stored tensor by name (``names`` lists them)."""

    def __init__(self, shard: ShardFile, key: str, row: IndexRow) -> None:
        self.id: str = row["id"]
        self.row = row
        self.key = key
        self._shard = shard
        self._loaded: Dict[str, torch.Tensor] = {}

    @property
    def path(self) -> Path:
        """The safetensors file holding this video."""
        return self._shard.path

    @property
    def meta(self) -> Dict[str, Any]:
        """The meta stored with the video (video info, model, method config, counts…)."""
        return self._shard.header.videos[self.key]["meta"]

    @property
    def names(self) -> List[str]:
        """Names of the stored tensors, from the header (nothing is read)."""
        return self._shard.header.names_of(self.key)

    @property
    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Shape of each stored tensor, from the header (nothing is read)."""
        entries = self._shard.header.tensors
        return {n: tuple(entries[tensor_name(self.key, n)]["shape"]) for n in self.names}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and tensor_name(self.key, name) in self._shard.header.tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._loaded:
            if name not in self:
                raise UnknownTensorError(f"{self.path}: video {self.id!r} has no tensor {name!r} "
                                         f"(it has: {', '.join(self.names)})")
            self._loaded[name] = self._shard.tensor(self.key, name)
        return self._loaded[name]

    def tensors(self, names: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
        """The named tensors (all of them when ``names`` is None), name → tensor."""
        return {n: self[n] for n in (self.names if names is None else names)}

    @property
    def tokens(self) -> torch.Tensor:
        """The compressed visual tokens, [T, D]."""
        return self["tokens"]

    @property
    def frame(self) -> torch.Tensor:
        """Sampled-frame number of each token, int32 [T]."""
        return self["frame"]

    @property
    def index(self) -> torch.Tensor:
        """Position of each token in its frame's pooled grid, int32 [T]."""
        return self["index"]

    @property
    def kind(self) -> torch.Tensor:
        """What each token is (keyframe / kept / merged anchor…), uint8 [T]."""
        return self["kind"]

    def __repr__(self) -> str:
        shape = self.shapes.get("tokens")
        return f"CachedVideo(id={self.id!r}, tokens={list(shape) if shape else None}, file={self.path.name!r})"


class TokenCache:
    """A token cache opened for reading: a cache directory (all index parts read as one cache) or a
    single aot safetensors file (``write_single`` output, or one shard).

    Mapping-like over video ids: ``len(cache)``, ``iter(cache)``/``cache.ids()`` (commit order),
    ``video_id in cache``, ``cache[video_id]`` → :class:`CachedVideo`. ``entries()`` gives the
    index rows of the cached videos, ``failures()`` those of videos whose latest attempt failed,
    ``lookup(id)`` one row for resuming. The index is read once when the cache is opened
    (``refresh()`` reads it again)."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such file or directory")
        self.is_directory = self.path.is_dir()
        self.manifest: Dict[str, Any] = {}
        self.skipped_lines = 0
        self.missing_shards: List[str] = []
        self._shards: "OrderedDict[Path, ShardFile]" = OrderedDict()
        self._ok: Dict[str, IndexRow] = {}
        self._failed: Dict[str, IndexRow] = {}
        self.refresh()

    # -- loading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """(Re)read the manifest and index, picking up videos committed since."""
        if self.is_directory:
            self.manifest = read_manifest(self.path)
            self._load_index()
        else:
            self._shards.pop(self.path, None)  # the file may have been replaced
            self._load_file()

    def _load_file(self) -> None:
        shard = self._shard(self.path)
        header = shard.header
        self._ok, self._failed = {}, {}
        for key, video in header.videos.items():
            meta = video.get("meta") if isinstance(video.get("meta"), dict) else {}
            tokens = header.tensors.get(tensor_name(key, "tokens"), {})
            row = ok_row(video["id"], self.path.name, key, tokens.get("shape"), meta, header.created_at)
            self._ok.pop(row["id"], None)
            self._ok[row["id"]] = row

    def _load_index(self) -> None:
        """Merge every ``index/*.jsonl`` part: rows in commit order (``committed_at``, then part,
        then line); per id the last ok row whose shard file exists wins; a failure row counts as
        the id's latest attempt. Lines that do not parse (a torn append) are skipped and counted."""
        rows, self.skipped_lines = _read_index_rows(self.path / INDEX)
        exists: Dict[Path, bool] = {}
        missing = set()
        ok: Dict[str, IndexRow] = {}
        failed: Dict[str, IndexRow] = {}
        latest_failed: Dict[str, bool] = {}
        for row in rows:
            vid = row["id"]
            if row["status"] == "ok":
                shard = resolve_shard(self.path, row.get("shard"))
                if shard is None or not isinstance(row.get("key"), str):
                    self.skipped_lines += 1
                    continue
                if shard not in exists:
                    exists[shard] = shard.is_file()
                if not exists[shard]:
                    missing.add(row["shard"])
                    continue
                ok.pop(vid, None)
                ok[vid] = row
                latest_failed[vid] = False
            else:
                failed.pop(vid, None)
                failed[vid] = row
                latest_failed[vid] = True
        self._ok = ok
        self._failed = {vid: row for vid, row in failed.items() if latest_failed[vid]}
        self.missing_shards = sorted(missing)

    def _shard(self, path: Path) -> ShardFile:
        """The opened shard at ``path`` (kept in a small least-recently-used set)."""
        shard = self._shards.pop(path, None) or ShardFile(path)
        self._shards[path] = shard
        while len(self._shards) > _OPEN_SHARDS:
            self._shards.popitem(last=False)
        return shard

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
        matches = [i for i in self._ok if i.endswith("/" + name.lstrip("/"))]
        return matches[0] if len(matches) == 1 else None

    def __getitem__(self, video_id: str) -> CachedVideo:
        row = self._ok.get(video_id)
        if row is None:
            raise UnknownVideoError(self._unknown_message(video_id))
        path = resolve_shard(self.path, row["shard"]) if self.is_directory else self.path
        shard = self._shard(path)
        stored = shard.header.videos.get(row["key"])
        if stored is None or stored.get("id") != video_id:
            raise CacheError(f"{path}: index row of {video_id!r} points to {row['key']!r}, which "
                             f"holds {stored.get('id') if stored else None!r}")
        return CachedVideo(shard, row["key"], row)

    def _unknown_message(self, video_id: object) -> str:
        failed = self._failed.get(video_id) if isinstance(video_id, str) else None
        if failed is not None:
            return (f"{self.path}: video {video_id!r} is not cached: it failed "
                    f"({failed['status']}: {failed.get('error')})")
        return (f"{self.path}: unknown video id {video_id!r} ({len(self)} videos cached; "
                "list them with cache.ids())")

    # -- index rows ---------------------------------------------------------------------------
    def entries(self) -> List[IndexRow]:
        """Index rows of the cached videos (status "ok"), in commit order: ``id``, ``shard``,
        ``key``, ``num_tokens``, ``sha256``, ``config_fingerprint``, ``meta``, ``committed_at``."""
        return list(self._ok.values())

    def failures(self) -> List[IndexRow]:
        """Rows of videos whose latest attempt failed (status other than "ok"): ``id``, ``status``,
        ``error``, ``path``, ``sha256``, ``config_fingerprint``, ``meta``, ``committed_at``. A video
        that failed and was later cached is not listed; one cached and later failed is listed (and
        still readable)."""
        return list(self._failed.values())

    def lookup(self, video_id: str) -> Optional[IndexRow]:
        """For resuming: the video's ok row if it is cached, else its latest failure row, else
        None. Compare ``row["sha256"]``/``row["config_fingerprint"]`` to decide to skip it."""
        return self._ok.get(video_id) or self._failed.get(video_id)

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


def _read_index_rows(index_dir: Path) -> Tuple[List[IndexRow], int]:
    """All well-formed rows of all index parts, sorted into commit order, and the number of lines
    that were skipped (not JSON, or lacking ``id``/``status``/``committed_at``)."""
    keyed: List[Tuple[Tuple[str, str, int], IndexRow]] = []
    skipped = 0
    parts = sorted(p for p in index_dir.glob(f"*{INDEX_SUFFIX}")
                   if not p.name.startswith(".") and not is_temp_name(p.name)) if index_dir.is_dir() else []
    for part in parts:
        try:
            data = part.read_bytes()
        except OSError as exc:
            raise CacheError(f"{part}: cannot read index part ({exc.strerror or exc})") from None
        for number, line in enumerate(data.split(b"\n")):
            if not line.strip():
                continue
            row = _parse_row(line)
            if row is None:
                skipped += 1
                continue
            keyed.append(((row["committed_at"], part.name, number), row))
    keyed.sort(key=lambda item: item[0])
    return [row for _, row in keyed], skipped


def _parse_row(line: bytes) -> Optional[IndexRow]:
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not (isinstance(row, dict) and isinstance(row.get("id"), str)
            and isinstance(row.get("status"), str) and isinstance(row.get("committed_at"), str)):
        return None
    return row
