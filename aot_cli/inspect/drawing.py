"""Drawing one frame's tile of the contact sheet (its marks on the picture, its caption) and the
sheet's legend."""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .layout import BORDER, Box, cell_box
from .marks import FrameMarks, SheetInfo
from .palette import (ANCHOR_COLOR, CAPTION_FONT, CLIP_BANDS, DIM_FACTOR, KEPT_COLOR, KEYFRAME_COLOR, TEXT_FONT,
                      TOWER_DOT_COLOR, load_font, text_width)

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
        font = load_font(TEXT_FONT + 1)
        bw = text_width(badge, "K", font) + 8
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
        draw.text((x + s / 2 - 3, y + 1), "K", fill=KEYFRAME_COLOR, font=load_font(CAPTION_FONT))
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
        w = swatch + 6 + text_width(draw, text, font) + 18
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
        if lines and text_width(draw, lines[-1] + " · " + chunk, font) <= width:
            lines[-1] = lines[-1] + " · " + chunk
            continue
        words, current = chunk.split(" "), ""
        for word in words:
            trial = f"{current} {word}".strip()
            if current and text_width(draw, trial, font) > width:
                lines.append(current)
                current = word
            else:
                current = trial
        lines.append(current)
    return lines
