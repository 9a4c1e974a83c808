"""The colours and fonts shared by the contact sheet (:mod:`.overlay`) and the plots (:mod:`.plots`):
one colour per meaning, so a kept token looks the same in both."""
from __future__ import annotations

import math
from typing import Tuple

from PIL import ImageDraw, ImageFont

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

CAPTION_FONT = 12
TITLE_FONT = 16
TEXT_FONT = 13


def load_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    x0, _, x1, _ = draw.textbbox((0, 0), text, font=font)
    return int(math.ceil(x1 - x0))
