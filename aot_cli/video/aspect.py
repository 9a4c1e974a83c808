"""Display aspect: the size a player shows a picture at, from its sample aspect ratio (SAR).

A stream whose pixels are not square (DVD and broadcast rips: 720x480 with SAR 32:27 is 16:9 on
screen, 1440x1080 HDV with SAR 4:3 is 1920x1080) is stored squeezed. The display size keeps the
stored height and scales the width by the SAR (``ffmpeg -vf scale=iw*sar:ih``, what players
show); the SAR is FFmpeg's own guess (``av_guess_sample_aspect_ratio``: the container's, else the
codec's).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional, Tuple

#: SARs outside [1/LIMIT, LIMIT] are treated as broken tags (square pixels are used instead).
LIMIT = 16


def usable_sar(value) -> Tuple[Fraction, Optional[str]]:
    """(the SAR to apply, a note when the tagged one was not usable). Missing, zero or negative
    SARs mean square pixels (FFmpeg's "undefined"); implausible ones are ignored with a note."""
    if value is None:
        return Fraction(1), None
    try:
        sar = Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return Fraction(1), None
    if sar <= 0:
        return Fraction(1), None
    if not Fraction(1, LIMIT) <= sar <= LIMIT:
        return Fraction(1), f"sample aspect ratio {ratio_text(sar)} ignored (implausible); square pixels assumed"
    return sar, None


def display_width(stored_width: int, sar: Fraction) -> int:
    """Width (pixels) a ``stored_width``-wide picture is shown at with sample aspect ratio ``sar``
    (the height stays): ``stored_width * sar`` rounded down, at least 1, the size
    ``ffmpeg -vf scale=iw*sar:ih`` gives (720x480 at 32:27 -> 853x480)."""
    if sar == 1:
        return int(stored_width)
    return max(1, int(stored_width * sar))


def ratio_text(value: Fraction) -> str:
    """``Fraction(32, 27)`` -> ``"32:27"``."""
    value = Fraction(value)
    return f"{value.numerator}:{value.denominator}"


def display_aspect(stored_width: int, stored_height: int, sar: Fraction) -> Fraction:
    """Display aspect ratio (width / height on screen) of the stored picture with ``sar``."""
    return Fraction(int(stored_width), max(1, int(stored_height))) * sar
