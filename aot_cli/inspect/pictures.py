"""Pictures of one cached video, for people.

- :func:`render_overlay`: a contact sheet (Pillow). The sampled frames are decoded again from the
  source video and drawn as tiles, in order, with what the method did to each one: anchors on the
  tower grid (dots), the output-grid cells a frame keeps as its own tokens (outlined), the
  keyframe's merged anchors (filled markers), the cells merged away into the anchors (rings),
  keyframes (orange border, "K") and clips (alternating bands, clip numbers).
- :func:`plot_tokens_per_frame`: tokens per frame against time, bars by kind (matplotlib).
- :func:`plot_ratio_sweep`: retention and fidelity of a sweep, per method (matplotlib); see
  :mod:`aot_cli.inspect.sweep`.

Geometry, stated honestly: tiles keep the frame's displayed aspect ratio and the grid is stretched
over the part of the frame the tower saw. For an exact resize (SigLIP, LLaVA) that is the whole
frame, squeezed to a square by the tower, so grid cells look as wide as the frame is wide; for a
resize + centre crop (CLIP, DINOv2) it is the crop, and the parts the tower never saw are dimmed.

matplotlib is optional (the ``viz`` extra) and imported only when a plot is made.
"""
from __future__ import annotations

import importlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..cache import CacheError, TokenCache, atomic_write_bytes
from ..cache.format import KIND_ANCHOR, KIND_KEPT, KIND_KEYFRAME, KIND_NEWLINE

Box = Tuple[float, float, float, float]
RGB = Tuple[int, int, int]

# One colour per meaning, shared by the contact sheet and the plots.
KEYFRAME_COLOR: RGB = (255, 140, 0)  # keyframe border / "K" / raw keyframe tokens
KEPT_COLOR: RGB = (0, 210, 255)  # tokens a non-key frame keeps as its own
ANCHOR_COLOR: RGB = (235, 40, 200)  # merged anchors (keyframe tokens after absorbing their clip)
TOWER_DOT_COLOR: RGB = (255, 255, 255)  # anchors on the tower grid
CLIP_BANDS: Tuple[RGB, RGB] = ((222, 230, 242), (246, 246, 246))
SHEET_BG: RGB = (255, 255, 255)
TEXT_COLOR: RGB = (20, 20, 20)
MUTED_TEXT: RGB = (90, 90, 90)
DIM_FACTOR = 0.5  # brightness of cells that give no token of their own

MARGIN = 12
GAP = 16  # between tiles; room for the keyframe border and the clip bands
BORDER = 4  # keyframe border width
MIN_TILE_WIDTH = 200  # so that the two caption lines fit
CAPTION_FONT = 12
TITLE_FONT = 16
TEXT_FONT = 13

# Bounds, whatever a cache's metadata claims: frames decoded again for a contact sheet (a cache
# with more sampled frames gets a one-line error, nothing is decoded), bars of a plot, grid
# sides, and pixels of a whole sheet.
MAX_OVERLAY_FRAMES = 256
MAX_PLOT_FRAMES = 4096
MAX_GRID_SIDE = 1024
MAX_SHEET_PIXELS = 200_000_000
PER_FRAME_TENSORS = ("anchors_per_frame", "cells_per_frame", "kept_per_frame", "merged_per_frame", "anchor_mask",
                     "cell_mask", "frame_indices", "timestamps")


class PictureError(RuntimeError):
    """A picture cannot be made. The message is one line that starts with the file concerned."""


def one_line(text: object) -> str:
    """``text`` with all whitespace runs (newlines included) turned into single spaces."""
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------------- what to draw

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
    """``video_id``, or the only id of a one-video cache; PictureError (one line) otherwise."""
    if video_id is not None:
        if video_id not in cache:
            raise PictureError(f"{cache.path}: no video with id {video_id!r}")
        return video_id
    ids = cache.ids()
    if len(ids) != 1:
        shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        raise PictureError(f"{cache.path}: holds {len(ids)} videos; choose one with --video ({shown})")
    return ids[0]


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


# ------------------------------------------------------------------------------------- geometry

def tower_region(preprocessing: Optional[dict], width: int, height: int) -> Box:
    """The part of a ``width x height`` frame the tower's patch grid covers, in frame pixels
    ``(x0, y0, x1, y1)``, from the preprocessing recorded in the cache (``meta["model"]
    ["preprocessing"]``). Exact resizes, aspect-preserving resizes and no resize cover the whole
    frame; a centre crop covers the crop (beyond the frame when the crop pads)."""
    pre = preprocessing or {}
    resize = pre.get("resize", "exact")
    if resize == "exact" and pre.get("size"):
        rh, rw = int(pre["size"][0]), int(pre["size"][1])
    elif resize == "shortest_edge" and pre.get("shortest_edge"):
        edge = int(pre["shortest_edge"])
        rh, rw = (int(edge * height / width), edge) if width <= height else (edge, int(edge * width / height))
    else:
        rh, rw = height, width
    crop = pre.get("crop")
    if not crop:
        return 0.0, 0.0, float(width), float(height)
    ch, cw = int(crop[0]), int(crop[1])
    top = (rh - ch) // 2 if ch <= rh else -((ch - rh + 1) // 2)
    left = (rw - cw) // 2 if cw <= rw else -((cw - rw + 1) // 2)
    sx, sy = width / rw, height / rh
    return left * sx, top * sy, (left + cw) * sx, (top + ch) * sy


def cell_box(cell: int, grid: Tuple[int, int], region: Box) -> Box:
    """Pixel box of row-major ``cell`` of ``grid`` (H, W) stretched over ``region``."""
    h, w = grid
    x0, y0, x1, y1 = region
    cw, ch = (x1 - x0) / w, (y1 - y0) / h
    r, c = divmod(int(cell), w)
    return x0 + c * cw, y0 + r * ch, x0 + (c + 1) * cw, y0 + (r + 1) * ch


def tile_scale(width: int, height: int, region: Box, grid: Tuple[int, int], cell_px: float) -> float:
    """Frame-to-tile scale so that an output-grid cell is about ``cell_px`` pixels (geometric
    mean of its width and height), and the tile at least :data:`MIN_TILE_WIDTH` wide."""
    rw, rh = region[2] - region[0], region[3] - region[1]
    scale = cell_px * math.sqrt(grid[0] * grid[1] / max(rw * rh, 1e-9))
    return max(scale, MIN_TILE_WIDTH / width)


@dataclass
class SheetLayout:
    """Where everything goes on the sheet. ``picture``: (w, h) of each frame's picture;
    ``legend_height``: the strip on top; tiles are ``cols`` per row."""

    picture: Tuple[int, int]
    cols: int
    rows: int
    legend_height: int
    caption_height: int

    @property
    def size(self) -> Tuple[int, int]:
        pw, ph = self.picture
        width = 2 * MARGIN + self.cols * pw + (self.cols - 1) * GAP
        height = self.legend_height + MARGIN + self.rows * (ph + self.caption_height) + (self.rows - 1) * GAP + MARGIN
        return width, height

    def picture_box(self, i: int) -> Tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of frame ``i``'s picture (x1, y1 exclusive)."""
        pw, ph = self.picture
        r, c = divmod(i, self.cols)
        x0 = MARGIN + c * (pw + GAP)
        y0 = self.legend_height + MARGIN + r * (ph + self.caption_height + GAP)
        return x0, y0, x0 + pw, y0 + ph


# ------------------------------------------------------------------------------------- frames

#: (height, width) the overlay's frames are decoded to cover: tiles are drawn far smaller, so
#: frames are never held at a 4K/8K source's native size.
OVERLAY_DECODE_SIZE = (720, 720)


def load_frames(video, video_path: Optional[str | Path] = None, count: Optional[int] = None) -> Tuple[np.ndarray, Path]:
    """Decode again the frames a cached video was made from: uint8 [F, H, W, 3], upright RGB.

    ``video_path`` defaults to the path recorded in the cache. The file must be the one that was
    cached (same sha256), and decoding with the recorded settings and decoder must give the
    recorded frame numbers; otherwise PictureError (one line, naming the file). ``count``: the
    number of sampled frames the cache holds (default :func:`frame_count`); at most
    :data:`MAX_OVERLAY_FRAMES`, and never more than ``count`` frames are decoded, whatever the
    recorded settings ask for (settings asking for another number are refused before decoding)."""
    from ..video import VideoDecodeError, decode_video, file_sha256

    count = frame_count(video) if count is None else count
    # frames of the method made of several sampled frames (Qwen temporal patches): decode the
    # sampled frames, show each method frame by its first one
    sampled = int(video.shapes["frame_indices"][0]) if "frame_indices" in video else count
    per = -(-sampled // count) if count and sampled != count else 1
    if per > 1 and not per * (count - 1) < sampled <= per * count:
        raise PictureError(f"{video.path}: video {video.id!r} records {sampled} sampled frames for {count} frames")
    count, shown = sampled, count
    if count > MAX_OVERLAY_FRAMES:
        raise PictureError(f"{video.path}: video {video.id!r} has {count} sampled frames; --overlay decodes "
                           f"and draws at most {MAX_OVERLAY_FRAMES}")
    recorded = video.meta_value("video.path", "str")
    path = Path(video_path) if video_path is not None else (Path(recorded) if recorded else None)
    if path is None:
        raise PictureError(f"{video.path}: the cache records no video path; pass --source VIDEO")
    if not path.is_file():
        if video_path is not None:
            raise PictureError(f"{path}: video not found")
        raise PictureError(f"{path}: the cached video is not there any more; pass --source with the video this cache was made from")
    want_sha = video.meta_value("video.sha256", "str") or video.meta_value("sha256", "str")
    cfg = _decode_config(video, count)
    if want_sha and file_sha256(path) != want_sha:
        raise PictureError(f"{path}: the video changed since it was cached (sha256 differs from the cache's)")
    try:
        decoded = decode_video(path, cfg, default_frames=count, target_size=OVERLAY_DECODE_SIZE, sha256=want_sha)
    except (VideoDecodeError, ValueError) as exc:
        raise PictureError(one_line(exc)) from None
    wanted = [int(i) for i in video.array("frame_indices").tolist()] if "frame_indices" in video else decoded.indices
    if list(decoded.indices) != wanted:
        differ = sum(a != b for a, b in zip(decoded.indices, wanted)) + abs(len(decoded.indices) - len(wanted))
        raise PictureError(f"{path}: decoding again gave other frames than the cache records ({differ} differ)")
    frames = decoded.frames.numpy()
    return (frames[::per] if per > 1 else frames)[:shown], path


def _decode_config(video, count: int):
    """The recorded decode settings, with the decoder that actually read the frames, bounded to
    ``count`` frames: a frame count other than ``count`` is refused (PictureError), rate sampling
    is capped at ``count`` frames."""
    from ..config import DecodeConfig, from_dict
    from ..video.decord_reader import decord_available

    data = dict(video.meta_value("config.decode", "dict") or {})
    where = video.meta_value("video.path", "str") or video.path
    try:
        cfg = from_dict(DecodeConfig, data)
    except (TypeError, ValueError) as exc:
        raise PictureError(f"{where}: unreadable decode settings in the cache ({one_line(exc)})") from None
    for name, kinds in (("frames", int), ("max_frames", int), ("fps", (int, float)), ("start", (int, float)),
                        ("end", (int, float)), ("timeout", (int, float))):
        value = getattr(cfg, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise PictureError(f"{where}: unreadable decode settings in the cache ({name}={str(value)[:20]!r})")
    if cfg.fps is None:
        if cfg.frames is not None and cfg.frames != count:
            raise PictureError(f"{where}: the cache's decode settings ask for {cfg.frames} frames but it holds "
                               f"{count}; not decoding")
        cfg.frames = count
    else:
        cfg.max_frames = count if cfg.max_frames is None else min(int(cfg.max_frames), count)
    used = video.meta_value("sampling.decoder", "str")
    if used == "pyav" or (used == "decord" and decord_available()):
        cfg.decoder = used
    return cfg


# ------------------------------------------------------------------------------------- drawing

def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    x0, _, x1, _ = draw.textbbox((0, 0), text, font=font)
    return int(math.ceil(x1 - x0))


def _shrink(box: Box, by: float) -> Box:
    return box[0] + by, box[1] + by, box[2] - by, box[3] - by


def _centre(box: Box) -> Tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _disc(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill, outline=None, width: int = 1) -> None:
    draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=width)


def dim_mask(marks: FrameMarks, grid: Tuple[int, int], region: Box, size: Tuple[int, int]) -> Image.Image:
    """Mode "L" mask of a picture of ``size``: 255 where the frame gives a token of its own (or
    everywhere inside ``region`` when it gives none and has no clip role), 0 elsewhere."""
    own = np.zeros(grid[0] * grid[1], dtype=np.uint8)
    cells = marks.raw + marks.kept + marks.anchors
    own[cells] = 255
    if not cells:
        own[:] = 0
    small = Image.fromarray(own.reshape(grid))
    x0, y0, x1, y1 = (int(round(v)) for v in region)
    mask = Image.new("L", size, 0)
    if x1 > x0 and y1 > y0:
        mask.paste(small.resize((x1 - x0, y1 - y0), Image.NEAREST), (x0, y0))
    return mask


def draw_picture(pixels: np.ndarray, marks: FrameMarks, info: SheetInfo, region: Box, size: Tuple[int, int]) -> Image.Image:
    """One frame's picture with its marks: ``pixels`` uint8 [H, W, 3] scaled to ``size``;
    ``region`` (tile pixels) is where the grids lie."""
    picture = Image.fromarray(pixels).convert("RGB").resize(size, Image.BILINEAR)
    total = info.grid[0] * info.grid[1]
    everything = len(marks.kept) == total and not marks.raw and not marks.anchors
    if not everything:
        dimmed = Image.eval(picture, lambda v: int(v * DIM_FACTOR))
        picture = Image.composite(picture, dimmed, dim_mask(marks, info.grid, region, size))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    first = cell_box(0, info.grid, region)
    cw, ch = first[2] - first[0], first[3] - first[1]
    line = max(1, int(round(min(cw, ch) / 9)))
    for cells, colour in ((marks.raw, KEYFRAME_COLOR), ([] if everything else marks.kept, KEPT_COLOR)):
        for cell in cells:
            draw.rectangle(_shrink(cell_box(cell, info.grid, region), line / 2), outline=colour + (255,), width=line)
    tower_first = cell_box(0, info.tower_grid, region)
    dot = max(1.0, 0.16 * min(tower_first[2] - tower_first[0], tower_first[3] - tower_first[1]))
    for cell in marks.tower_anchors:
        x, y = _centre(cell_box(cell, info.tower_grid, region))
        _disc(draw, x, y, dot + 0.8, fill=(0, 0, 0, 140))
        _disc(draw, x, y, dot, fill=TOWER_DOT_COLOR + (235,))
    ring = max(1.5, 0.34 * min(cw, ch))
    for cell in marks.merged:
        x, y = _centre(cell_box(cell, info.grid, region))
        _disc(draw, x, y, ring, fill=None, outline=ANCHOR_COLOR + (230,), width=max(1, line // 2 + 1))
    blob = max(2.0, 0.3 * min(cw, ch))
    for cell in marks.anchors:
        x, y = _centre(cell_box(cell, info.grid, region))
        _disc(draw, x, y, blob, fill=ANCHOR_COLOR + (255,), outline=(255, 255, 255, 255), width=1)
    picture = Image.alpha_composite(picture.convert("RGBA"), layer).convert("RGB")
    if marks.keyframe:
        badge = ImageDraw.Draw(picture)
        font = _font(TEXT_FONT + 1)
        bw = _text_width(badge, "K", font) + 8
        badge.rectangle((0, 0, bw, TEXT_FONT + 6), fill=KEYFRAME_COLOR)
        badge.text((4, 1), "K", fill=(0, 0, 0), font=font)
    return picture


def caption_lines(marks: FrameMarks, info: SheetInfo) -> Tuple[str, str]:
    """The two caption lines under a frame: where it is in the video, and what it kept."""
    time = "?" if math.isnan(marks.time_s) else f"{marks.time_s:.2f} s"
    head = f"#{marks.frame} · frame {marks.source_index} · {time}"
    total = info.grid[0] * info.grid[1]
    if marks.keyframe:
        body = f"{len(marks.raw)} raw + {len(marks.anchors)} anchors"
        if info.clips > 1 or info.has_keyframes:
            body = f"clip {marks.clip + 1} · " + body
    elif marks.merged or info.has_keyframes:
        body = f"{len(marks.kept)} kept · {len(marks.merged)} merged"
    elif len(marks.kept) == total:
        body = f"all {total} kept"
    else:
        body = f"{len(marks.kept)} of {total} kept"
    return head, body


def _legend_items(info: SheetInfo) -> List[Tuple[str, str]]:
    """(glyph, text) pairs for the legend, only for marks the sheet can show."""
    items = [("dot", f"anchor on the {info.tower_grid[0]}x{info.tower_grid[1]} tower grid")] if info.has_anchors else []
    if info.has_keyframes:
        items += [("kept", "kept as its own token"), ("raw", "raw keyframe token"),
                  ("anchor", "merged anchor"), ("ring", "merged into the clip's anchors"),
                  ("key", "keyframe (starts a clip)"), ("band", "clips alternate shading")]
    elif info.keeps_everything:
        items += [("plain", "every cell of every frame is a token (nothing removed)")]
    else:
        items += [("kept", "kept token"), ("dim", "no token of its own")]
    return items


def _draw_glyph(draw: ImageDraw.ImageDraw, glyph: str, x: int, y: int, s: int) -> None:
    """A legend sample ``s`` pixels square at (x, y) on a dark swatch."""
    box = (x, y, x + s, y + s)
    if glyph == "band":
        draw.rectangle((x, y, x + s // 2, y + s), fill=CLIP_BANDS[0])
        draw.rectangle((x + s // 2, y, x + s, y + s), fill=CLIP_BANDS[1], outline=(200, 200, 200))
        return
    if glyph == "key":
        draw.rectangle(box, outline=KEYFRAME_COLOR, width=BORDER)
        draw.text((x + s / 2 - 3, y + 1), "K", fill=KEYFRAME_COLOR, font=_font(CAPTION_FONT))
        return
    draw.rectangle(box, fill=(70, 70, 70))
    if glyph == "dot":
        _disc(draw, x + s / 2, y + s / 2, 2.8, fill=(0, 0, 0))
        _disc(draw, x + s / 2, y + s / 2, 2.0, fill=TOWER_DOT_COLOR)
    elif glyph == "kept":
        draw.rectangle(_shrink(box, 2), outline=KEPT_COLOR, width=2)
    elif glyph == "raw":
        draw.rectangle(_shrink(box, 2), outline=KEYFRAME_COLOR, width=2)
    elif glyph == "anchor":
        _disc(draw, x + s / 2, y + s / 2, s * 0.3, fill=ANCHOR_COLOR, outline=(255, 255, 255))
    elif glyph == "plain":
        draw.rectangle(box, fill=(150, 150, 150))
    elif glyph == "dim":
        draw.rectangle(box, fill=(int(160 * DIM_FACTOR),) * 3)
    elif glyph == "ring":
        _disc(draw, x + s / 2, y + s / 2, s * 0.22, fill=None, outline=ANCHOR_COLOR, width=2)


def _title_lines(info: SheetInfo, geometry_note: str) -> Tuple[str, str]:
    ratio = f"ratio {info.ratio:.4f}" if info.ratio is not None else "ratio ?"
    asked = f", asked {info.requested_ratio:g}" if info.requested_ratio is not None else ""
    title = (f"{info.video_id}: {info.frames} frames, {info.achieved} of {info.uncompressed} tokens kept "
             f"({ratio}{asked})")
    clips = ""
    if info.has_keyframes:
        lengths = "/".join(str(l) for l in info.clip_lengths)
        clips = f" · {info.clips} clips of {lengths} frames"
    sub = (f"model {info.model} · tower grid {info.tower_grid[0]}x{info.tower_grid[1]} -> output grid "
           f"{info.grid[0]}x{info.grid[1]}{clips} · {geometry_note}")
    return title, sub


def _wrap_items(draw: ImageDraw.ImageDraw, items: List[Tuple[str, str]], width: int, font, swatch: int) -> List[List[Tuple[str, str, int]]]:
    """Legend items laid out in rows no wider than ``width``: [(glyph, text, item width)]."""
    rows: List[List[Tuple[str, str, int]]] = [[]]
    used = 0
    for glyph, text in items:
        w = swatch + 6 + _text_width(draw, text, font) + 18
        if rows[-1] and used + w > width:
            rows.append([])
            used = 0
        rows[-1].append((glyph, text, w))
        used += w
    return rows


def _wrap_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> List[str]:
    """``text`` broken at " · " (then spaces) into lines no wider than ``width``."""
    lines: List[str] = []
    for chunk in text.split(" · "):
        if lines and _text_width(draw, lines[-1] + " · " + chunk, font) <= width:
            lines[-1] = lines[-1] + " · " + chunk
            continue
        words, current = chunk.split(" "), ""
        for word in words:
            trial = f"{current} {word}".strip()
            if current and _text_width(draw, trial, font) > width:
                lines.append(current)
                current = word
            else:
                current = trial
        lines.append(current)
    return lines


def geometry_note(preprocessing: Optional[dict], region: Box, width: int, height: int) -> str:
    """One phrase saying how the grid sits on the frames (see the module docstring)."""
    pre = preprocessing or {}
    whole = region == (0.0, 0.0, float(width), float(height))
    if not preprocessing:
        return "grid stretched over the whole frame (no preprocessing recorded)"
    if whole and pre.get("resize") == "exact" and pre.get("size"):
        h, w = pre["size"]
        return f"grid stretched over the whole frame (the tower saw it resized to {w}x{h})"
    if whole:
        return "grid over the whole frame, as the tower saw it"
    return "grid over the centre crop the tower saw; outside it is dimmed"


def render_overlay(cache: TokenCache | str | Path, video_id: Optional[str], out_png: str | Path,
                   video_path: Optional[str | Path] = None, cols: int = 8, cell_px: float = 16) -> "OverlayResult":
    """Draw a contact sheet of one cached video and write it to ``out_png`` atomically.

    Args:
        cache: a :class:`TokenCache` or the path of one.
        video_id: the video; None for the only video of a one-video cache.
        out_png: where the PNG goes (parent folders are created).
        video_path: the source video; default the path recorded in the cache (its sha256 must
            match the cache's, and its frames are decoded again with the recorded settings).
        cols: tiles per row (fewer when there are fewer frames).
        cell_px: approximate size of an output-grid cell in pixels (tiles are at least
            :data:`MIN_TILE_WIDTH` pixels wide).

    Returns an :class:`OverlayResult` (image size, each frame's picture box, keyframes).
    Raises PictureError (one line) when the video is missing, changed, or the cache lacks what the
    sheet needs.
    """
    if cols < 1:
        raise PictureError(f"{out_png}: cols must be at least 1, got {cols}")
    if not cell_px > 0:
        raise PictureError(f"{out_png}: cell_px must be positive, got {cell_px}")
    cache = cache if isinstance(cache, TokenCache) else TokenCache(cache)
    vid = resolve_video_id(cache, video_id)
    video = cache[vid]
    marks = frame_marks(video, MAX_OVERLAY_FRAMES)
    if not marks:
        raise PictureError(f"{video.path}: video {vid!r} records no sampled frames")
    info = sheet_info(video, vid, marks)
    preprocessing = preprocessing_of(video)
    frames, _ = load_frames(video, video_path, count=len(marks))
    if frames.shape[0] != len(marks):
        raise PictureError(f"{video.path}: decoded {frames.shape[0]} frames, the cache has {len(marks)}")
    height, width = int(frames.shape[1]), int(frames.shape[2])
    region = tower_region(preprocessing, width, height)
    scale = tile_scale(width, height, region, info.grid, cell_px)
    picture = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    shown = min(cols, len(marks))
    pixels = (shown * (picture[0] + GAP)) * (math.ceil(len(marks) / shown) * (picture[1] + GAP + 40))
    if pixels > MAX_SHEET_PIXELS:
        raise PictureError(f"{out_png}: the sheet would have about {pixels / 1e6:.0f} million pixels (at most "
                           f"{MAX_SHEET_PIXELS // 1_000_000} million); lower --cell-px")
    tile_region = tuple(v * scale for v in region)
    sheet, layout = _compose(frames, marks, info, picture, tile_region,
                             geometry_note(preprocessing, region, width, height), cols)
    out = write_png(sheet, out_png)
    boxes = [layout.picture_box(i) for i in range(len(marks))]
    return OverlayResult(path=out, size=sheet.size, picture_boxes=boxes, cols=layout.cols, rows=layout.rows,
                         keyframes=[m.frame for m in marks if m.keyframe])


@dataclass
class OverlayResult:
    """What :func:`render_overlay` wrote: ``path``, image ``size`` (w, h), the picture box
    (x0, y0, x1, y1; x1/y1 exclusive) of every sampled frame in order, the tile layout, and the
    sampled-frame positions of the keyframes."""

    path: Path
    size: Tuple[int, int]
    picture_boxes: List[Tuple[int, int, int, int]]
    cols: int
    rows: int
    keyframes: List[int]


def _compose(frames: np.ndarray, marks: Sequence[FrameMarks], info: SheetInfo, picture: Tuple[int, int],
             region: Box, note: str, cols: int) -> Tuple[Image.Image, SheetLayout]:
    """The whole sheet: legend strip, then tiles (picture + two caption lines) on clip bands."""
    count = len(marks)
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    caption_font, text_font, title_font = _font(CAPTION_FONT), _font(TEXT_FONT), _font(TITLE_FONT)
    caption_height = 2 * (CAPTION_FONT + 4) + 6
    width = 2 * MARGIN + cols * picture[0] + (cols - 1) * GAP
    inner = width - 2 * MARGIN
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title, sub = _title_lines(info, note)
    title_lines = _wrap_text(probe, title, inner, title_font)
    sub_lines = _wrap_text(probe, sub, inner, text_font)
    swatch = TEXT_FONT + 3
    item_rows = _wrap_items(probe, _legend_items(info), inner, text_font, swatch)
    legend_height = (MARGIN + len(title_lines) * (TITLE_FONT + 6) + len(sub_lines) * (TEXT_FONT + 5) + 4
                     + len(item_rows) * (swatch + 8))
    layout = SheetLayout(picture, cols, rows, legend_height, caption_height)
    sheet = Image.new("RGB", layout.size, SHEET_BG)
    draw = ImageDraw.Draw(sheet)
    y = MARGIN
    for text in title_lines:
        draw.text((MARGIN, y), text, fill=TEXT_COLOR, font=title_font)
        y += TITLE_FONT + 6
    for text in sub_lines:
        draw.text((MARGIN, y), text, fill=MUTED_TEXT, font=text_font)
        y += TEXT_FONT + 5
    y += 4
    for row in item_rows:
        x = MARGIN
        for glyph, text, w in row:
            _draw_glyph(draw, glyph, x, y, swatch)
            draw.text((x + swatch + 6, y + 1), text, fill=TEXT_COLOR, font=text_font)
            x += w
        y += swatch + 8
    half = GAP // 2
    for m in marks:  # clip bands first, so the tiles sit on them
        x0, y0, x1, y1 = layout.picture_box(m.frame)
        if m.clip >= 0:
            draw.rectangle((x0 - half, y0 - half, x1 + half - 1, y1 + caption_height + half - 1),
                           fill=CLIP_BANDS[m.clip % 2])
    for m in marks:
        x0, y0, x1, y1 = layout.picture_box(m.frame)
        sheet.paste(draw_picture(frames[m.frame], m, info, region, picture), (x0, y0))
        if m.keyframe:
            draw.rectangle((x0 - BORDER, y0 - BORDER, x1 + BORDER - 1, y1 + BORDER - 1), outline=KEYFRAME_COLOR, width=BORDER)
        head, body = caption_lines(m, info)
        draw.text((x0, y1 + 4), head, fill=TEXT_COLOR, font=caption_font)
        draw.text((x0, y1 + 4 + CAPTION_FONT + 4), body, fill=MUTED_TEXT, font=caption_font)
    return sheet, layout


def _write_picture(data: bytes, out_png: str | Path) -> Path:
    """Write encoded picture bytes at ``out_png`` atomically (temporary file, fsync, rename),
    creating its folder; PictureError (one line) when the folder cannot be made."""
    out = Path(out_png)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PictureError(f"{out}: cannot create its folder ({exc.strerror or exc})") from None
    atomic_write_bytes(out, data)
    return out


def write_png(image: Image.Image, out_png: str | Path) -> Path:
    """Save ``image`` as PNG at ``out_png`` atomically (temporary file, fsync, rename)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return _write_picture(buffer.getvalue(), out_png)


# ------------------------------------------------------------------------------------- plots

def require_matplotlib():
    """The matplotlib module, imported now; PictureError (one line) when it is not installed."""
    try:
        import matplotlib

        importlib.import_module("matplotlib.backends.backend_agg")
    except ImportError:
        raise PictureError("matplotlib is not installed: plots need it (pip install 'aot-cli[viz]' or pip install matplotlib)") from None
    return matplotlib


def _new_figure(width_in: float, height_in: float):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global figure state)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, out_png: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return _write_picture(buffer.getvalue(), out_png)


def _rgb(colour: RGB) -> Tuple[float, float, float]:
    return tuple(c / 255 for c in colour)  # type: ignore[return-value]


def plot_tokens_per_frame(cache: TokenCache | str | Path, video_id: Optional[str], out_png: str | Path) -> Path:
    """Bar chart of the tokens each sampled frame contributes, against time: stacked by kind
    (raw keyframe tokens, merged anchors, kept tokens), keyframes marked "K", clip boundaries
    as dotted vertical lines, the mean per frame as a dashed line. Written atomically to
    ``out_png``. Needs only the cache (and matplotlib). Returns the path."""
    require_matplotlib()
    cache = cache if isinstance(cache, TokenCache) else TokenCache(cache)
    vid = resolve_video_id(cache, video_id)
    video = cache[vid]
    marks = frame_marks(video, MAX_PLOT_FRAMES)
    if not marks:
        raise PictureError(f"{video.path}: video {vid!r} records no sampled frames")
    info = sheet_info(video, vid, marks)
    times = np.array([m.time_s for m in marks], dtype=np.float64)
    use_time = len(times) > 1 and bool(np.isfinite(times).all()) and bool(np.all(np.diff(times) > 0))
    x = times if use_time else np.arange(len(marks), dtype=np.float64)
    step = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
    raw = np.array([len(m.raw) for m in marks])
    anchors = np.array([len(m.anchors) for m in marks])
    kept = np.array([len(m.kept) for m in marks])
    fig = _new_figure(min(16.0, max(7.0, 0.28 * len(marks) + 4)), 4.2)
    ax = fig.add_subplot()
    width = 0.8 * step
    for values, bottom, colour, label in ((raw, 0, KEYFRAME_COLOR, "raw keyframe tokens"),
                                          (anchors, raw, ANCHOR_COLOR, "merged anchors (of the clip)"),
                                          (kept, raw + anchors, KEPT_COLOR, "kept tokens")):
        if values.any():
            ax.bar(x, values, width, bottom=bottom, color=_rgb(colour), label=label)
    totals = raw + anchors + kept
    merged = np.array([len(m.merged) for m in marks])
    if merged.any():
        ax.bar(x, merged, width, bottom=totals, fill=False, hatch="///", edgecolor=_rgb(ANCHOR_COLOR), linewidth=0,
               label="merged into the anchors\n(not in the output)")
    top = max(1, int((totals + merged).max()))
    for m, xi, t in zip(marks, x, totals + merged):
        if m.keyframe:
            ax.text(xi, t + 0.02 * top, "K", ha="center", va="bottom", fontsize=9, fontweight="bold",
                    color=_rgb(KEYFRAME_COLOR))
    starts = [m.frame for m in marks if m.keyframe and m.frame > 0]
    for i, f in enumerate(starts):
        ax.axvline((x[f - 1] + x[f]) / 2, color="0.35", linestyle=":", linewidth=1,
                   label="clip boundary" if i == 0 else None)
    mean = totals.mean() if len(totals) else 0.0
    ax.axhline(mean, color="0.2", linestyle="--", linewidth=1, label=f"mean {mean:.1f} per frame")
    ax.set_xlim(x[0] - step, x[-1] + step)
    ax.set_ylim(0, top * 1.15)
    ax.set_xlabel("time in the video (s)" if use_time else "sampled frame")
    ax.set_ylabel("tokens in the output")
    ratio = f"ratio {info.ratio:.4f}" if info.ratio is not None else ""
    ax.set_title(f"{vid}: {info.achieved} of {info.uncompressed} tokens ({ratio})\n"
                 f"uncompressed: {info.grid[0]}x{info.grid[1]} = {info.grid[0] * info.grid[1]} per frame", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return _save_figure(fig, out_png)


#: One colour per sweep method (docs/method.md §10); the configured method keeps the kept-token colour.
SWEEP_COLORS = {"aot": KEPT_COLOR, "quality": (40, 160, 70), "random": (130, 130, 130), "pool": (90, 90, 220),
                "attention": (220, 120, 30)}
REFERENCE_MARKERS = ("*", "D", "P", "X")


def plot_ratio_sweep(points: Sequence[Any], out_png: str | Path, title: Optional[str] = None) -> Path:
    """A sweep (:class:`aot_cli.inspect.sweep.SweepPoint` list) as a PNG.

    First panel: requested vs achieved retention, one line per method (exact budgets, with the
    identity line) and the reference-rule points (V, keep ratio) as horizontal lines at the
    retention they reached. When the points carry fidelity figures, three more panels plot
    coverage, salient coverage and OT error against the achieved ratio, one line per method, the
    reference points as stars. Points with an error are listed in the figure's footnote. Written
    atomically to ``out_png``; returns the path."""
    require_matplotlib()
    ratio_pts = [p for p in points if p.rule == "ratio" and p.error is None]
    ref_pts = [p for p in points if p.rule == "reference" and p.error is None]
    failed = [p for p in points if p.error is not None]
    if not ratio_pts and not ref_pts:
        raise PictureError(f"{out_png}: nothing to plot: every sweep point failed")
    methods = list(dict.fromkeys(getattr(p, "method", "aot") for p in ratio_pts))
    by_method = {m: sorted((p for p in ratio_pts if getattr(p, "method", "aot") == m), key=lambda p: p.requested)
                 for m in methods}
    has_fidelity = any(getattr(p, "coverage", None) is not None for p in ratio_pts + ref_pts)
    fig = _new_figure(12.0, 9.0) if has_fidelity else _new_figure(6.4, 5.0)
    ax = fig.add_subplot(2, 2, 1) if has_fidelity else fig.add_subplot()
    values = [p.requested for p in ratio_pts] + [p.achieved_ratio for p in ratio_pts + ref_pts]
    hi = max(values) * 1.15
    ax.plot([0, hi], [0, hi], color="0.6", linestyle="--", linewidth=1, label="achieved = requested")
    styles = ["-.", ":", (0, (5, 2, 1, 2))]
    for m in methods:
        pts = by_method[m]
        colour = _rgb(SWEEP_COLORS.get(m, KEPT_COLOR))
        label = "--ratio (exact budget)" if methods == ["aot"] else f"{m} (exact budget)"
        ax.plot([p.requested for p in pts], [p.achieved_ratio for p in pts], "o-", color=colour,
                markeredgecolor="0.2", label=label)
        if m == methods[0]:
            for p in pts:
                ax.annotate(f"{p.achieved} tok", (p.requested, p.achieved_ratio), textcoords="offset points",
                            xytext=(6, -12), fontsize=8, color="0.25")
    for i, p in enumerate(ref_pts):
        ax.axhline(p.achieved_ratio, color=_rgb(ANCHOR_COLOR), linestyle=styles[i % len(styles)], linewidth=1.4,
                   label=f"reference {p.label}: {p.achieved_ratio:.3f} ({p.achieved} tok)")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("requested ratio (--ratio)")
    ax.set_ylabel("achieved ratio (tokens kept / uncompressed)")
    ax.set_title("retention: requested vs achieved" if has_fidelity else (title or "retention: requested vs achieved"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    if has_fidelity:
        panels = (("coverage", "coverage (mean max cosine, all tokens)"),
                  ("salient_coverage", "salient coverage (top 10 % attention)"),
                  ("ot_error", "OT error (exact EMD, cost 1 - cos; lower is better)"))
        for k, (attr, name) in enumerate(panels, start=2):
            axf = fig.add_subplot(2, 2, k)
            for m in methods:
                pts = [p for p in by_method[m] if getattr(p, attr, None) is not None]
                if pts:
                    axf.plot([p.achieved_ratio for p in pts], [getattr(p, attr) for p in pts], "o-",
                             color=_rgb(SWEEP_COLORS.get(m, KEPT_COLOR)), markeredgecolor="0.2", label=m)
            for i, p in enumerate(ref_pts):
                if getattr(p, attr, None) is not None:
                    axf.plot([p.achieved_ratio], [getattr(p, attr)], marker=REFERENCE_MARKERS[i % len(REFERENCE_MARKERS)],
                             markersize=10, linestyle="none", color=_rgb(ANCHOR_COLOR), markeredgecolor="0.2",
                             label=f"reference {p.label}")
            axf.set_xlabel("achieved ratio")
            axf.set_title(name, fontsize=10)
            axf.grid(alpha=0.3)
            if k == 2:  # one legend for the three fidelity panels
                axf.legend(loc="best", fontsize=7)
        if title:
            fig.suptitle(title, fontsize=10)
    if failed:
        fig.text(0.01, 0.005, "not met: " + "; ".join(f"{getattr(p, 'method', 'aot')} {p.label}" for p in failed),
                 fontsize=7, color="0.35")
    return _save_figure(fig, out_png)
