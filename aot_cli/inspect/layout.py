"""Geometry of the contact sheet: where the tower's grid lies on a frame, how large tiles are, and
where each tile goes.

Tiles keep the frame's displayed aspect ratio and the grid is stretched over the part of the frame
the tower saw. For an exact resize (SigLIP, LLaVA) that is the whole frame, squeezed to a square by
the tower, so grid cells look as wide as the frame is wide; for a resize + centre crop (CLIP,
DINOv2) it is the crop, and the parts the tower never saw are dimmed.

By default a sheet is :data:`SHEET_WIDTH` pixels wide, so it fits a screen: as many columns as
keep an output-grid cell at least :data:`MIN_CELL_PX` pixels (at most :data:`DEFAULT_COLS`), and
tiles as wide as the columns allow. A wider sheet (``width``) or a cell size (``cell_px``) gives
more detail.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

Box = Tuple[float, float, float, float]

MARGIN = 12
GAP = 16  # between tiles; room for the keyframe border and the clip bands
BORDER = 4  # keyframe border width
MIN_TILE_WIDTH = 200  # so that the two caption lines fit
MAX_SHEET_PIXELS = 200_000_000
#: The sheet's default width in pixels (it fits a screen), the narrowest one accepted, the most
#: columns chosen by default, and the smallest output-grid cell (pixels) the default keeps.
SHEET_WIDTH = 2000
MIN_SHEET_WIDTH = MIN_TILE_WIDTH + 2 * MARGIN
DEFAULT_COLS = 8
MIN_CELL_PX = 10


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


def fit_tiles(width: int, region: Box, grid: Tuple[int, int], count: int, sheet_width: int = SHEET_WIDTH,
              cols: Optional[int] = None) -> Tuple[int, float]:
    """(columns, frame-to-tile scale) of a sheet ``sheet_width`` pixels wide showing ``count``
    frames ``width`` pixels wide whose ``grid`` lies over ``region``: ``cols`` columns when given,
    else the most (up to :data:`DEFAULT_COLS`) whose tiles keep an output-grid cell at least
    :data:`MIN_CELL_PX` pixels and a tile at least :data:`MIN_TILE_WIDTH` wide (one column when
    even that does not)."""
    area = max((region[2] - region[0]) * (region[3] - region[1]), 1e-9)

    def tile(c: int) -> float:
        return max(1.0, (sheet_width - 2 * MARGIN - (c - 1) * GAP) / c)

    def cell(c: int) -> float:
        return tile(c) / width * math.sqrt(area / (grid[0] * grid[1]))

    if cols is None:
        cols = next((c for c in range(min(DEFAULT_COLS, count), 0, -1)
                     if cell(c) >= MIN_CELL_PX and tile(c) >= MIN_TILE_WIDTH), 1)
    cols = max(1, min(cols, count))
    return cols, max(tile(cols), MIN_TILE_WIDTH) / width


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
