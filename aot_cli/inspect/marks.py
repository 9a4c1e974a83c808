"""What a cache records about each sampled frame of one video, read for pictures: the tokens each
frame keeps, the anchors merged into its clip's keyframe, the anchors on the tower grid, clips and
keyframes (:func:`frame_marks`), and the facts a sheet's legend states (:func:`sheet_info`). Needs
the cache only (no video, no torch); every value used to index is checked first."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..cache import CacheError, TokenCache
from ..cache.format import KIND_ANCHOR, KIND_KEPT, KIND_KEYFRAME, KIND_NEWLINE
from .output import PictureError

# Bounds, whatever a cache's metadata claims: frames decoded again for a contact sheet (a cache
# with more sampled frames gets a one-line error, nothing is decoded), bars of a plot, grid
# sides, and pixels of a whole sheet.
MAX_OVERLAY_FRAMES = 256
MAX_PLOT_FRAMES = 4096
MAX_GRID_SIDE = 1024
PER_FRAME_TENSORS = ("anchors_per_frame", "cells_per_frame", "kept_per_frame", "merged_per_frame", "anchor_mask",
                     "cell_mask", "frame_indices", "timestamps")


@dataclass
class FrameMarks:
    """What the cache records for one sampled frame. Cells are row-major positions in the output
    grid (``meta["counts"]["grid"]``), ``tower_anchors`` in the tower grid.

    ``raw``: the keyframe's untouched tokens (kind 0); ``kept``: tokens a frame keeps as its own
    (kind 1); ``anchors``: the clip's merged anchors, which sit on its keyframe's cells (kind 2);
    ``merged``: anchor cells of a non-key frame that were merged into the anchors instead of
    kept; ``clip``: 0-based clip number (-1 when the video has no clips)."""

    frame: int
    source_index: int
    time_s: float
    keyframe: bool
    clip: int
    raw: List[int] = field(default_factory=list)
    kept: List[int] = field(default_factory=list)
    anchors: List[int] = field(default_factory=list)
    merged: List[int] = field(default_factory=list)
    tower_anchors: List[int] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Output tokens attributed to this frame (raw + kept + merged anchors)."""
        return len(self.raw) + len(self.kept) + len(self.anchors)


@dataclass
class SheetInfo:
    """The cache facts the sheet's legend states."""

    video_id: str
    frames: int
    tower_grid: Tuple[int, int]
    grid: Tuple[int, int]
    achieved: int
    uncompressed: int
    ratio: Optional[float]
    requested_ratio: Optional[float]
    model: str
    clips: int
    clip_lengths: List[int]
    has_keyframes: bool
    has_anchors: bool
    keeps_everything: bool


def resolve_video_id(cache: TokenCache, video_id: Optional[str]) -> str:
    """The id ``video_id`` names, or the only id of a one-video cache
    (:meth:`TokenCache.resolve`); PictureError (one line) otherwise."""
    try:
        return cache.resolve(video_id)
    except CacheError as exc:
        raise PictureError(str(exc)) from None


def marked_video(cache, video_id: Optional[str], max_frames: int):
    """``(cache, video id, video, marks, info)`` of the video a picture shows: ``cache`` a
    :class:`TokenCache` or its path, ``video_id`` None for the only video of a one-video cache;
    :func:`frame_marks` (at most ``max_frames``) and :func:`sheet_info`. PictureError when the
    video records no sampled frames."""
    cache = cache if isinstance(cache, TokenCache) else TokenCache(cache)
    vid = resolve_video_id(cache, video_id)
    video = cache[vid]
    marks = frame_marks(video, max_frames)
    if not marks:
        raise PictureError(f"{video.path}: video {vid!r} records no sampled frames")
    return cache, vid, video, marks, sheet_info(video, vid, marks)


def _damaged(video, field: str, what: str) -> CacheError:
    return CacheError(f"{video.path}: video {video.id!r}: {field} {what}")


def _meta_grid(video, key: str) -> Optional[Tuple[int, int]]:
    """``meta["counts"][key]`` as (rows, cols), None when absent; CacheError unless it is two
    positive integers of at most :data:`MAX_GRID_SIDE`."""
    grid = video.meta_value(f"counts.{key}", "grid")
    if grid is not None and max(grid) > MAX_GRID_SIDE:
        raise _damaged(video, f"meta field 'counts.{key}'", f"{grid} has a side over {MAX_GRID_SIDE}")
    return None if grid is None else (int(grid[0]), int(grid[1]))


def _grid_of(video, key: str) -> Tuple[int, int]:
    """:func:`_meta_grid`, required (PictureError when the meta has none)."""
    grid = _meta_grid(video, key)
    if grid is None:
        raise PictureError(f"{video.path}: video {video.id!r}: the cache's meta has no counts.{key}")
    return grid


def _cells(mask_row: np.ndarray) -> List[int]:
    return [int(i) for i in np.flatnonzero(mask_row)]


def frame_count(video) -> int:
    """The number of the method's frames ``video`` records (sampled frames, or a Qwen tower's
    temporal patches): the length of its per-frame tensors (their lengths agree; the reader
    checks), else ``meta["counts"]["frames"]``, else one past the largest ``frame`` number."""
    for name in PER_FRAME_TENSORS:
        if name in video:
            return int(video.shapes[name][0])
    claimed = video.meta_value("counts.frames", "int")
    if claimed is not None:
        return int(claimed)
    frame = video.array("frame")
    return int(frame.max()) + 1 if len(frame) else 0


def _checked_arrays(video, count: int):
    """kind, frame, index (int64) and segments of ``video``, with every value checked against
    ``count`` frames and the output grid (CacheError naming the field otherwise)."""
    kind = video.array("kind").astype(np.int64)
    frame = video.array("frame").astype(np.int64)
    index = video.array("index").astype(np.int64)
    if not np.isin(kind, (KIND_KEYFRAME, KIND_KEPT, KIND_ANCHOR, KIND_NEWLINE)).all():
        raise _damaged(video, "tensor 'kind'", "holds values other than 0-3")
    visual = kind != KIND_NEWLINE
    if visual.any() and (frame[visual].min() < 0 or frame[visual].max() >= count):
        raise _damaged(video, "tensor 'frame'", f"holds frame numbers outside 0..{count - 1}")
    grid = _meta_grid(video, "grid")
    if grid is not None and visual.any() and (index[visual].min() < 0 or index[visual].max() >= grid[0] * grid[1]):
        raise _damaged(video, "tensor 'index'", f"holds cells outside the {grid[0]}x{grid[1]} grid")
    segments = ([tuple(int(x) for x in s) for s in video.array("segments").tolist()] if "segments" in video
                else [(0, count)])
    if any(start < 0 or length < 1 or start + length > count for start, length in segments):
        raise _damaged(video, "tensor 'segments'", f"holds clips outside the {count} frames")
    return kind, frame, index, segments


def _mask(video, name: str, count: int, key: str) -> Optional[np.ndarray]:
    if name not in video:
        return None
    grid = _meta_grid(video, key)
    mask = video.array(name)
    if mask.shape[0] != count or (grid is not None and mask.shape[1] != grid[0] * grid[1]):
        raise _damaged(video, f"tensor {name!r}", f"has shape {list(mask.shape)}, not [{count}, cells of "
                       f"counts.{key}]")
    return mask


def frame_marks(video, max_frames: int = MAX_PLOT_FRAMES) -> List[FrameMarks]:
    """Per sampled frame, what the cache says was kept, merged and anchored (see
    :class:`FrameMarks`). ``video`` is a :class:`aot_cli.cache.CachedVideo`. Needs no video file
    and no torch. Raises PictureError when the video has more than ``max_frames`` sampled frames,
    CacheError (naming the field) when its tensors disagree with each other or its meta."""
    count = frame_count(video)
    if count > max_frames:
        raise PictureError(f"{video.path}: video {video.id!r} has {count} sampled frames; pictures show at "
                           f"most {max_frames}")
    kind, frame, index, segments = _checked_arrays(video, count)
    source = [int(x) for x in video.array("frame_indices").tolist()] if "frame_indices" in video else list(range(count))
    times = [float(x) for x in video.array("timestamps").tolist()] if "timestamps" in video else [float("nan")] * count
    if len(source) != count and count and len(source) == len(times):
        # frames of the method made of several sampled frames (a Qwen temporal patch of 2, the last
        # one possibly padded): each is shown by its first sampled frame
        per = -(-len(source) // count)
        if per * (count - 1) < len(source) <= per * count:
            source, times = source[::per], times[::per]
    if len(source) != count or len(times) != count:
        raise _damaged(video, "per-frame tensors", f"do not have {count} rows")
    has_keyframes = bool(np.isin(kind, (KIND_KEYFRAME, KIND_ANCHOR)).any())
    clip_of = np.full(count, -1, dtype=np.int64)
    for number, (start, length) in enumerate(segments):
        clip_of[start:start + length] = number
    starts = {s for s, _ in segments} if has_keyframes else set()
    anchor_mask = _mask(video, "anchor_mask", count, "tower_grid")
    cell_mask = _mask(video, "cell_mask", count, "grid")
    marks = []
    order = np.argsort(frame, kind="stable")  # tokens grouped by frame, in their stored order
    bounds = np.searchsorted(frame[order], np.arange(count + 1), side="left")
    for f in range(count):
        mine = order[bounds[f]:bounds[f + 1]]
        kinds, cells = kind[mine], index[mine]
        kept = [int(i) for i in cells[kinds == KIND_KEPT]]
        m = FrameMarks(
            frame=f, source_index=source[f], time_s=times[f], keyframe=f in starts,
            clip=int(clip_of[f]) if has_keyframes else -1,
            raw=[int(i) for i in cells[kinds == KIND_KEYFRAME]], kept=kept,
            anchors=[int(i) for i in cells[kinds == KIND_ANCHOR]],
            tower_anchors=_cells(anchor_mask[f]) if anchor_mask is not None else [],
        )
        if cell_mask is not None and has_keyframes and not m.keyframe:
            kept_set = set(kept)
            m.merged = [c for c in _cells(cell_mask[f]) if c not in kept_set]
        marks.append(m)
    return marks


def sheet_info(video, video_id: str, marks: Sequence[FrameMarks]) -> SheetInfo:
    """The legend's facts for ``video`` (a CachedVideo)."""
    name = video.meta_value("model.repo_id", "str") or video.meta_value("model.model", "str") or "?"
    segments = [tuple(int(x) for x in s) for s in video.array("segments").tolist()] if "segments" in video else []
    grid = _grid_of(video, "grid")
    total = grid[0] * grid[1]
    achieved = video.meta_value("counts.achieved", "int")
    if achieved is None:
        achieved = sum(m.tokens for m in marks)
    return SheetInfo(
        video_id=video_id, frames=len(marks), tower_grid=_grid_of(video, "tower_grid"), grid=grid,
        achieved=int(achieved), uncompressed=int(video.meta_value("counts.uncompressed_tokens", "int") or 0),
        ratio=video.meta_value("counts.ratio", "number"),
        requested_ratio=video.meta_value("counts.requested_ratio", "number"), model=str(name),
        clips=len(segments), clip_lengths=sorted({int(l) for _, l in segments}),
        has_keyframes=any(m.keyframe for m in marks), has_anchors=any(m.tower_anchors for m in marks),
        keeps_everything=all(len(m.kept) == total for m in marks),
    )


def preprocessing_of(video) -> Optional[dict]:
    """``meta["model"]["preprocessing"]`` with its geometry fields checked (``resize``,
    ``size``/``crop`` as two positive integers, ``shortest_edge`` a positive integer); None when
    absent. CacheError naming the field otherwise."""
    pre = video.meta_value("model.preprocessing", "dict")
    if pre is None:
        return None
    for key, kind in (("resize", "str"), ("size", "grid"), ("crop", "grid"), ("shortest_edge", "int")):
        value = video.meta_value(f"model.preprocessing.{key}", kind)
        if kind != "str" and value is not None and (max(value) if isinstance(value, list) else value) > 1 << 16:
            raise _damaged(video, f"meta field 'model.preprocessing.{key}'", f"{value} is too large")
        if key == "shortest_edge" and value == 0:
            raise _damaged(video, "meta field 'model.preprocessing.shortest_edge'", "is 0")
    return pre
