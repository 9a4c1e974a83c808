"""The contact sheet of one cached video (:func:`render_overlay`, Pillow): the sampled frames decoded
again and drawn as tiles, in order, with what the method did to each one: anchors on the tower
grid (dots), the output-grid cells a frame keeps as its own tokens (outlined), the keyframe's
merged anchors (filled markers), the cells merged away into the anchors (rings), keyframes
(orange border, "K") and clips (alternating bands, clip numbers). Geometry and sizes:
:mod:`.layout`; what is drawn: :mod:`.marks`; how: :mod:`.drawing`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..cache import TokenCache
from .drawing import _draw_glyph, _legend_items, _title_lines, _wrap_items, _wrap_text, caption_lines, draw_picture
from .frames import load_frames
from .layout import (BORDER, DEFAULT_COLS, GAP, MARGIN, MAX_SHEET_PIXELS, MIN_SHEET_WIDTH, SHEET_WIDTH, Box,
                     SheetLayout, fit_tiles, geometry_note, tile_scale, tower_region)
from .marks import MAX_OVERLAY_FRAMES, FrameMarks, SheetInfo, marked_video, preprocessing_of
from .output import PictureError, write_png
from .palette import CAPTION_FONT, CLIP_BANDS, KEYFRAME_COLOR, MUTED_TEXT, SHEET_BG, TEXT_COLOR, TEXT_FONT, TITLE_FONT, load_font


def render_overlay(cache: TokenCache | str | Path, video_id: Optional[str], out_png: str | Path,
                   video_path: Optional[str | Path] = None, cols: Optional[int] = None,
                   cell_px: Optional[float] = None, width: Optional[int] = None) -> "OverlayResult":
    """Draw a contact sheet of one cached video and write it to ``out_png`` atomically.

    Args:
        cache: a :class:`TokenCache` or the path of one.
        video_id: the video; None for the only video of a one-video cache.
        out_png: where the PNG goes (parent folders are created).
        video_path: the source video; default the path recorded in the cache (its sha256 must
            match the cache's, and its frames are decoded again with the recorded settings).
        cols: tiles per row (None: as many as keep cells readable, at most 8; fewer when there
            are fewer frames).
        cell_px: approximate size of an output-grid cell in pixels; the sheet is as wide as that
            makes it (tiles at least :data:`~.layout.MIN_TILE_WIDTH` wide). None: fit ``width``.
        width: the sheet's width in pixels when ``cell_px`` is None (default
            :data:`~.layout.SHEET_WIDTH`, 2000: it fits a screen).

    Returns an :class:`OverlayResult` (image size, each frame's picture box, keyframes).
    Raises PictureError (one line) when the video is missing, changed, or the cache lacks what the
    sheet needs.
    """
    if cols is not None and cols < 1:
        raise PictureError(f"{out_png}: cols must be at least 1, got {cols}")
    if cell_px is not None and not cell_px > 0:
        raise PictureError(f"{out_png}: cell_px must be positive, got {cell_px}")
    if width is not None and not width >= MIN_SHEET_WIDTH:
        raise PictureError(f"{out_png}: the sheet width must be at least {MIN_SHEET_WIDTH} pixels, got {width}")
    cache, vid, video, marks, info = marked_video(cache, video_id, MAX_OVERLAY_FRAMES)
    preprocessing = preprocessing_of(video)
    frames, _ = load_frames(video, video_path, count=len(marks))
    if frames.shape[0] != len(marks):
        raise PictureError(f"{video.path}: decoded {frames.shape[0]} frames, the cache has {len(marks)}")
    height, frame_width = int(frames.shape[1]), int(frames.shape[2])
    region = tower_region(preprocessing, frame_width, height)
    if cell_px is not None:
        cols = min(cols or DEFAULT_COLS, len(marks))
        scale = tile_scale(frame_width, height, region, info.grid, cell_px)
    else:
        cols, scale = fit_tiles(frame_width, region, info.grid, len(marks), width or SHEET_WIDTH, cols)
    picture = (max(1, int(round(frame_width * scale))), max(1, int(round(height * scale))))
    shown = min(cols, len(marks))
    pixels = (shown * (picture[0] + GAP)) * (math.ceil(len(marks) / shown) * (picture[1] + GAP + 40))
    if pixels > MAX_SHEET_PIXELS:
        raise PictureError(f"{out_png}: the sheet would have about {pixels / 1e6:.0f} million pixels (at most "
                           f"{MAX_SHEET_PIXELS // 1_000_000} million); lower --cell-px or --width")
    tile_region = tuple(v * scale for v in region)
    sheet, layout = _compose(frames, marks, info, picture, tile_region,
                             geometry_note(preprocessing, region, frame_width, height), cols)
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
    caption_font, text_font, title_font = load_font(CAPTION_FONT), load_font(TEXT_FONT), load_font(TITLE_FONT)
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
