"""Picture timelines from timestamps that may restart, repeat, wrap or be missing.

Frame ``k`` of a video is the k-th picture of a sequential decode, so a timeline is a list of
seconds in decode-output (display) order. The timestamps a container gives are hints: joined
MPEG-TS pieces start again from their own origin, AVI files carry no presentation times (their
"pts" are packet numbers that come out of the decoder reordered), some muxers repeat a
timestamp. :func:`continuous_timeline` turns such a list into one non-decreasing timeline: pieces
after a restart are laid after the piece before, missing values are filled one frame interval on,
and a list that goes backwards too often to be restarts is replaced by a constant rate.
:func:`display_order` predicts that list from demuxed packets alone (no decoding).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

#: Default forward jump (s) that counts as a timestamp discontinuity in formats that allow them
#: (MPEG-TS/PS): FFmpeg's own ``dts_delta_threshold`` default.
DISCONTINUITY_S = 10.0
#: Seconds below which two timestamps are the same instant (float rounding).
SAME_INSTANT = 1e-6


@dataclass
class Timeline:
    """``seconds``: float64 [n] non-decreasing, relative to the first picture. ``restarts``: times
    the source timestamps went back (or jumped forward past the discontinuity threshold) and the
    timeline was continued instead. ``ordered``: False when the timestamps were not in display
    order and a constant rate was used. ``interval``: typical seconds per picture. ``notes``:
    one-line remarks for the user."""

    seconds: np.ndarray
    restarts: int = 0
    ordered: bool = True
    interval: float = 0.0
    notes: List[str] = field(default_factory=list)


def typical_step(values: np.ndarray, fps: float) -> float:
    """Median positive step of ``values``, else ``1/fps``, else 0.04 s."""
    steps = np.diff(values)
    steps = steps[steps > SAME_INSTANT]
    if steps.size:
        return float(np.median(steps))
    return 1.0 / fps if fps > 0 else 0.04


def constant_rate(count: int, fps: float) -> np.ndarray:
    """``i / fps`` for ``count`` pictures (25 fps when the rate is unknown)."""
    return np.arange(count, dtype=np.float64) / (fps if fps > 0 else 25.0)


def continuous_timeline(seconds: Sequence[Optional[float]], fps: float,
                        discontinuity: Optional[float] = None) -> Timeline:
    """One non-decreasing timeline (relative to the first picture) from per-picture times in
    display order. ``seconds``: each picture's timestamp or None; ``fps``: the declared rate
    (used when timestamps are missing or unusable); ``discontinuity``: a forward jump longer
    than this many seconds is also a restart (None: only backward steps are)."""
    count = len(seconds)
    if count == 0:
        return Timeline(np.zeros(0, dtype=np.float64))
    known = np.asarray([s for s in seconds if s is not None], dtype=np.float64)
    if known.size == 0:
        rate = fps if fps > 0 else 25.0
        return Timeline(constant_rate(count, rate), interval=1.0 / rate)
    back = int(np.count_nonzero(np.diff(known) < -SAME_INSTANT))
    if back > 3 and back * 50 > count:
        rate = fps if fps > 0 else 25.0
        note = (f"picture timestamps are not in display order ({back} steps back); the timeline assumes "
                f"a constant {rate:g} fps")
        return Timeline(constant_rate(count, rate), ordered=False, interval=1.0 / rate, notes=[note])
    step = typical_step(known, fps)
    fill = 1.0 / fps if fps > 0 else step
    out = np.empty(count, dtype=np.float64)
    offset, restarts = 0.0, 0
    previous_raw: Optional[float] = None
    previous = None
    for i, value in enumerate(seconds):
        if value is None:
            current = 0.0 if previous is None else previous + fill
        else:
            raw = float(value)
            if previous_raw is not None:
                jump = raw - previous_raw
                if jump < -SAME_INSTANT or (discontinuity is not None and jump > discontinuity):
                    offset = previous + step - raw
                    restarts += 1
            current = raw + offset
            if previous is not None and current < previous:
                current = previous
            previous_raw = raw
        out[i] = current
        previous = current
    out -= out[0]
    notes = []
    if restarts:
        notes.append(f"the timestamps restart {restarts} time(s) (joined pieces or a wrap); pictures are "
                     "taken in file order and each piece continues the timeline")
    missing = count - int(known.size)
    if missing:
        notes.append(f"{missing} picture(s) carry no timestamp; each is placed one frame interval after the one before")
    return Timeline(out, restarts=restarts, interval=step, notes=notes)


def display_order(pts: Sequence[Optional[int]], dts: Sequence[Optional[int]],
                  discontinuity_ticks: Optional[int]) -> List[Optional[int]]:
    """Predict the decoded pictures' pts, in display order, from packets in file (decode) order.

    Decode timestamps only go forward within one continuous piece of the stream; a step back (or
    a forward jump over ``discontinuity_ticks``) starts a new piece. Packets without a dts
    (Matroska leaves some out) are not compared. Inside a piece the decoder returns pictures in
    pts order; pieces follow each other. Packets without pts keep their place (as None) after the
    sorted ones of their piece."""
    pieces: List[List[int]] = [[]]
    missing: List[int] = [0]
    last: Optional[int] = None
    for p, d in zip(pts, dts):
        if d is not None:
            if last is not None:
                jump = d - last
                if jump < 0 or (discontinuity_ticks is not None and jump > discontinuity_ticks):
                    pieces.append([])
                    missing.append(0)
            last = d
        if p is None:
            missing[-1] += 1
        else:
            pieces[-1].append(int(p))
    order: List[Optional[int]] = []
    for piece, gaps in zip(pieces, missing):
        order.extend(sorted(piece))
        order.extend([None] * gaps)
    return order
