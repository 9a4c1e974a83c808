"""A ``torch.utils.data.Dataset`` over a token cache, one item per video, and a collate function
that pads a batch of variable-length token sequences.

    ds = CacheDataset("cache/", names=("tokens", "kind"))
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_videos)
    for batch in loader:
        batch["tokens"]          # [B, Tmax, D], zero-padded
        batch["attention_mask"]  # [B, Tmax] int64, 1 on real tokens

The dataset keeps only the cache path and the id list; each process (the main one or a
DataLoader worker) opens its own :class:`~aot_cli.cache.TokenCache` on first use, so the dataset
pickles cleanly under any multiprocessing start method.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from aot_cli.cache import TokenCache

from .errors import DownstreamError

# Tensors with one entry per token ([T] or [T, D]); they are padded together by collate_videos.
TOKEN_ALIGNED = ("tokens", "frame", "index", "kind")
# Token-aligned along their second dimension: Qwen3-VL's DeepStack rows [L, T, D].
TOKEN_ALIGNED_DIM1 = ("deepstack",)
# Per-video tensors of one fixed shape, stacked into [B, ...]: the Qwen grid (t, h, w) [3].
STACKED = ("video_grid_thw",)
VideoItem = Dict[str, Any]


class CacheDataset(Dataset):
    """One item per cached video: ``{"id": str, <name>: tensor for each of names, "meta": dict}``
    (``meta`` only when ``with_meta``).

    ``path``: a cache directory or a single aot ``.safetensors`` file. ``ids``: the videos to
    serve, in that order (default: every cached video, in commit order); unknown ids raise a
    :class:`DownstreamError` here, not later in a worker. ``names``: the stored tensors to load,
    e.g. ``("tokens", "frame", "index", "kind")`` or per-video ones such as ``"frame_indices"``;
    a name a video lacks raises the cache's one-line ``UnknownTensorError`` when that item is read.
    """

    def __init__(self, path: Union[str, Path], ids: Optional[Iterable[str]] = None,
                 names: Sequence[str] = ("tokens",), with_meta: bool = True) -> None:
        self.path = Path(path)
        self.names: Tuple[str, ...] = tuple(names)
        self.with_meta = with_meta
        if not self.names and not with_meta:
            raise DownstreamError(f"{self.path}: CacheDataset needs at least one tensor name or with_meta=True")
        with TokenCache(self.path) as cache:  # opened only to resolve ids; never kept
            self.ids: List[str] = cache.ids() if ids is None else list(ids)
            missing = [vid for vid in self.ids if vid not in cache]
        if missing:
            shown = ", ".join(repr(v) for v in missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise DownstreamError(f"{self.path}: {len(missing)} requested id(s) not cached: {shown}")
        self._cache: Optional[TokenCache] = None
        self._owner_pid: Optional[int] = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> VideoItem:
        video = self._open()[self.ids[i]]
        item: VideoItem = {"id": video.id}
        for name in self.names:
            item[name] = video[name]
        if self.with_meta:
            item["meta"] = video.meta
        return item

    def _open(self) -> TokenCache:
        """This process's reader (opened on first use, and again after a fork)."""
        if self._cache is None or self._owner_pid != os.getpid():
            self._cache = TokenCache(self.path)
            self._owner_pid = os.getpid()
        return self._cache

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None  # open file handles never travel to another process
        state["_owner_pid"] = None
        return state

    def __repr__(self) -> str:
        return f"CacheDataset({str(self.path)!r}, videos={len(self)}, names={list(self.names)})"


def collate_videos(batch: Sequence[VideoItem], pad: bool = True, padding_side: str = "right") -> Dict[str, Any]:
    """Merge :class:`CacheDataset` items into one batch.

    Always: ``ids`` (list of str), ``lengths`` (int64 [B], tokens per video) and ``meta`` (list of
    dicts, when the items have it). With ``pad`` (default) the token-aligned tensors
    (``tokens`` [T, D] → [B, Tmax, D]; ``frame``/``index``/``kind`` [T] → [B, Tmax]; Qwen3-VL's
    ``deepstack`` [L, T, D] → [B, L, Tmax, D]) are padded with zeros to the longest video on
    ``padding_side`` ("right" or "left") and ``attention_mask`` (int64 [B, Tmax], 1 on real
    tokens) is added, and Qwen's ``video_grid_thw`` [3] is stacked into [B, 3] (the processor's
    layout); without ``pad`` they stay lists. Other per-video tensors (``frame_indices``,
    ``anchor_mask``…) are always lists. Mixed token widths or dtypes raise :class:`DownstreamError`.
    """
    if not batch:
        raise DownstreamError("collate_videos: empty batch")
    if padding_side not in ("right", "left"):
        raise DownstreamError(f"collate_videos: padding_side must be 'right' or 'left', got {padding_side!r}")
    ids = [item["id"] for item in batch]
    lengths = torch.tensor([_length(item) for item in batch], dtype=torch.int64)
    out: Dict[str, Any] = {"ids": ids, "lengths": lengths}
    names = [k for k in batch[0] if k not in ("id", "meta")]
    for name in names:
        values = [item[name] for item in batch]
        if pad and name in TOKEN_ALIGNED:
            out[name] = _pad(name, values, lengths, padding_side, ids)
        elif pad and name in TOKEN_ALIGNED_DIM1:
            moved = _pad(name, [v.transpose(0, 1) for v in values], lengths, padding_side, ids)
            out[name] = moved.transpose(1, 2).contiguous()
        elif pad and name in STACKED:
            out[name] = _stack(name, values, ids)
        else:
            out[name] = values
    if pad and any(name in TOKEN_ALIGNED + TOKEN_ALIGNED_DIM1 for name in names):
        out["attention_mask"] = _mask(lengths, padding_side)
    if "meta" in batch[0]:
        out["meta"] = [item["meta"] for item in batch]
    return out


def _length(item: VideoItem) -> int:
    """Tokens of one item, checked to agree across its token-aligned tensors (0 when it has none)."""
    lengths = {name: int(item[name].shape[0]) for name in TOKEN_ALIGNED if name in item}
    lengths.update({name: int(item[name].shape[1]) for name in TOKEN_ALIGNED_DIM1 if name in item})
    if len(set(lengths.values())) > 1:
        raise DownstreamError(f"collate_videos: video {item['id']!r} has token-aligned tensors of "
                              f"different lengths {lengths}")
    return next(iter(lengths.values()), 0)


def _pad(name: str, values: List[torch.Tensor], lengths: torch.Tensor, side: str, ids: List[str]) -> torch.Tensor:
    """Stack ``values`` ([T_b, ...] each) into [B, Tmax, ...], zeros where a video is shorter."""
    first = values[0]
    for vid, v in zip(ids, values):
        if v.shape[1:] != first.shape[1:] or v.dtype != first.dtype:
            raise DownstreamError(f"collate_videos: {name!r} of video {vid!r} is {v.dtype} {list(v.shape)}, "
                                  f"but {ids[0]!r} has {first.dtype} {list(first.shape)}")
    tmax = int(lengths.max()) if len(lengths) else 0
    out = first.new_zeros((len(values), tmax, *first.shape[1:]))
    for b, v in enumerate(values):
        n = v.shape[0]
        if side == "right":
            out[b, :n] = v
        else:
            out[b, tmax - n:] = v
    return out


def _stack(name: str, values: List[torch.Tensor], ids: List[str]) -> torch.Tensor:
    """Per-video tensors of one shape and dtype stacked into [B, ...]."""
    first = values[0]
    for vid, v in zip(ids, values):
        if v.shape != first.shape or v.dtype != first.dtype:
            raise DownstreamError(f"collate_videos: {name!r} of video {vid!r} is {v.dtype} {list(v.shape)}, "
                                  f"but {ids[0]!r} has {first.dtype} {list(first.shape)}")
    return torch.stack(values)


def _mask(lengths: torch.Tensor, side: str) -> torch.Tensor:
    """int64 [B, Tmax]: 1 on the positions that hold real tokens."""
    tmax = int(lengths.max()) if len(lengths) else 0
    pos = torch.arange(tmax).unsqueeze(0)
    if side == "right":
        return (pos < lengths.unsqueeze(1)).to(torch.int64)
    return (pos >= (tmax - lengths).unsqueeze(1)).to(torch.int64)
