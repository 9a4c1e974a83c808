"""Write a display rotation into an existing MP4/MOV file's video track header (``tkhd``).

PyAV >= 16 sets it while muxing (``VideoStream.set_display_rotation``); older PyAV (15.x, which
lmms-eval's ``av<16`` pin installs) has no such call, so the test clip generator writes the
matrix into the file afterwards. The matrix is the one FFmpeg's ``av_display_rotation_set``
builds (libavutil/display.c) and the MOV muxer stores row by row (ISO/IEC 14496-12 §8.3.2,
``TrackHeaderBox.matrix``: a, b, u, c, d, v, x, y, w as 32-bit big-endian fixed point, 16.16 for
a-d/x/y and 2.30 for u/v/w).
"""
from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Iterator, Optional, Tuple

CONTAINERS = {b"moov", b"trak", b"mdia"}


def _boxes(data: bytes, start: int, end: int) -> Iterator[Tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"damaged MP4 box {kind!r} at byte {pos}")
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> Optional[Tuple[int, int]]:
    return next(((s, e) for k, s, e in _boxes(data, start, end) if k == kind), None)


def display_matrix(clockwise: int) -> Tuple[int, ...]:
    """The 3x3 matrix (row-major int32) that turns stored pictures ``clockwise`` degrees for display,
    as ``av_display_rotation_set(m, clockwise)`` fills it (what PyAV 16's
    ``set_display_rotation(-clockwise)`` writes)."""
    radians = math.radians(-clockwise)
    c, s = round(math.cos(radians)), round(math.sin(radians))
    fixed = 1 << 16
    return (c * fixed, -s * fixed, 0, s * fixed, c * fixed, 0, 0, 0, 1 << 30)


def set_display_rotation(path: Path, clockwise: int) -> None:
    """Store ``clockwise`` (a multiple of 90) in the ``tkhd`` matrix of ``path``'s video track."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    moov = _child(data, 0, len(data), b"moov")
    if moov is None:
        raise ValueError(f"{path}: no moov box")
    for kind, start, end in _boxes(data, *moov):
        if kind != b"trak":
            continue
        mdia = _child(data, start, end, b"mdia")
        hdlr = _child(data, *mdia, b"hdlr") if mdia else None
        if hdlr is None or bytes(data[hdlr[0] + 8:hdlr[0] + 12]) != b"vide":
            continue
        tkhd = _child(data, start, end, b"tkhd")
        if tkhd is None:
            raise ValueError(f"{path}: video track without tkhd")
        version = data[tkhd[0]]
        # version/flags, times, track id, reserved, duration; reserved[2], layer, group, volume, reserved
        offset = tkhd[0] + (4 + (32 if version == 1 else 20)) + 8 + 8
        data[offset:offset + 36] = struct.pack(">9i", *display_matrix(clockwise))
        path.write_bytes(bytes(data))
        return
    raise ValueError(f"{path}: no video track")
