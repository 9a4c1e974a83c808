"""Probing: what a video file holds and its true per-frame timeline.

Container headers can lie (a frame count larger than the file holds, or none at all), so the
frame count and timestamps come from demuxing every packet of the video stream, which reads the
file but decodes nothing. Only the first picture is decoded, to learn the stored size and the
rotation the display matrix asks for.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Tuple

import av
import numpy as np

from .info import Deadline, FrameIndex, VideoDecodeError, VideoInfo, describe_exception

#: Container formats / codecs FFmpeg uses to show text files as pictures (ANSI art, etc.).
TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
#: Top-level box types that mark an ISO-BMFF (MP4/MOV) file.
ISO_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
#: Packets between two timeout checks while demuxing.
CHECK_EVERY = 256


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes as lowercase hex, read in ``chunk_size`` pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(chunk_size)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: str | Path) -> int:
    """Size in bytes of a regular, non-empty file; :class:`VideoDecodeError` otherwise."""
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(path, "no such file")
    if p.is_dir():
        raise VideoDecodeError(path, "is a directory, not a video file")
    size = p.stat().st_size
    if size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    return size


def mp4_index_problem(path: str | Path) -> Optional[str]:
    """For an MP4/MOV file whose ``moov`` index box (the sample table) is missing or cut off, a
    one-line description; None when the index is whole or the file is not MP4/MOV."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        end = handle.tell()
        offset = 0
        while offset + 8 <= end:
            handle.seek(offset)
            size, kind = struct.unpack(">I4s", handle.read(8))
            if offset == 0 and kind not in ISO_BMFF_BOXES:
                return None
            if size == 1 and offset + 16 <= end:
                (size,) = struct.unpack(">Q", handle.read(8))
            elif size == 0:
                size = end - offset
            if kind == b"moov":
                if offset + size > end:
                    return "MP4/MOV index box 'moov' is cut off (truncated file)"
                return None
            if size < 8:
                return None
            offset += size
    if offset == 0:
        return None
    return "MP4/MOV file has no 'moov' index box (truncated or unfinished recording)"


def open_container(path: str | Path) -> av.container.InputContainer:
    """Open ``path`` with PyAV, turning failures into a one-line :class:`VideoDecodeError`."""
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except Exception as exc:  # PyAV raises several FFmpegError subclasses and OSError
        cause = mp4_index_problem(path) or f"not a readable video ({describe_exception(exc)})"
        raise VideoDecodeError(path, cause) from None


def pick_video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    """The first video stream that is not a cover picture; rejects files FFmpeg reads as text."""
    if container.format.name in TEXT_FORMATS:
        raise VideoDecodeError(path, f"not a video (FFmpeg reads it as text, format '{container.format.name}')")
    attached = av.stream.Disposition.attached_pic
    streams = [s for s in container.streams.video if not (s.disposition & attached)]
    if not streams:
        if container.streams.video:
            raise VideoDecodeError(path, "no video stream (only a cover picture)")
        problem = mp4_index_problem(path)
        if problem:
            raise VideoDecodeError(path, problem)
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    stream = streams[0]
    codec = stream.codec_context.name if stream.codec_context is not None else None
    if codec is None:
        raise VideoDecodeError(path, "video stream has no decoder available")
    if codec in TEXT_CODECS:
        raise VideoDecodeError(path, f"not a video (FFmpeg reads it as text, codec '{codec}')")
    return stream


@dataclass
class PacketScan:
    """What demuxing one video stream found: ``first`` picture (None if none decoded), ``pts``
    and ``durations`` (stream ticks) of each displayed packet in file order (pts None where
    missing), ``packets`` with data (discarded ones included), ``discarded`` packets marked not
    for display, ``error`` text when demuxing stopped on an error before the end."""

    first: Optional[av.VideoFrame] = None
    pts: List[Optional[int]] = field(default_factory=list)
    durations: List[int] = field(default_factory=list)
    packets: int = 0
    discarded: int = 0
    error: Optional[str] = None


def scan_packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    deadline: Deadline,
) -> PacketScan:
    """Demux every packet of ``stream``, decoding only until the first picture comes out. A
    demuxing error ends the scan (what was found so far is kept; ``error`` says why)."""
    scan = PacketScan()
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as exc:
            scan.error = describe_exception(exc)
            break
        if packet.size == 0:
            continue
        scan.packets += 1
        if packet.is_discard:
            scan.discarded += 1
        else:
            scan.pts.append(packet.pts)
            scan.durations.append(int(packet.duration or 0))
        if scan.first is None:
            scan.first = first_picture(stream, packet)
        if scan.packets % CHECK_EVERY == 0:
            deadline.check("demuxing")
    if scan.first is None and scan.packets:
        scan.first = first_picture(stream, None)
    return scan


def first_picture(stream: av.video.stream.VideoStream, packet: Optional[av.Packet]) -> Optional[av.VideoFrame]:
    """Feed one packet (None: flush) to the decoder; the first picture it returns, if any."""
    try:
        pictures = stream.decode(packet)
    except av.FFmpegError:
        return None
    return pictures[0] if pictures else None


def rate_of(stream: av.video.stream.VideoStream) -> Optional[float]:
    """The stream's declared frame rate (average, else guessed, else base), or None."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return None


def build_timeline(
    pts: List[Optional[int]],
    durations: List[int],
    time_base: Optional[Fraction],
    declared_fps: Optional[float],
) -> Tuple[np.ndarray, Optional[np.ndarray], bool, float, float, List[str]]:
    """Per-frame timeline from packet timestamps.

    Returns (timestamps float64 [n] relative to the first frame, int64 [n] sorted pts in stream
    ticks (None without pts), whether packet pts were used, fps, duration seconds, notes). Without
    usable pts the timeline is ``i / fps``.
    """
    notes: List[str] = []
    n = len(pts)
    has_pts = n > 0 and time_base is not None and all(p is not None for p in pts)
    if has_pts:
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        ticks = np.asarray(pts, dtype=np.int64)[order]
        timestamps = ((ticks - ticks[0]) * time_base.numerator).astype(np.float64) / time_base.denominator
        tb = float(time_base)
        span = float(timestamps[-1])
        fps = declared_fps or 0.0
        if n >= 2 and span > 0:
            measured = (n - 1) / span
            # Keep the exact declared rate when it agrees with the timestamps (30000/1001, 25).
            if not fps or abs(fps - measured) > 1e-3 * measured:
                fps = measured
        last = float(durations[int(order[-1])]) * tb
        if last <= 0:
            last = span / (n - 1) if n >= 2 and span > 0 else (1.0 / fps if fps > 0 else 0.0)
        return timestamps, ticks, True, fps, span + last, notes
    fps = declared_fps or 0.0
    if fps <= 0:
        fps = 25.0
        notes.append("no timestamps and no frame rate in the file; assumed 25 fps")
    elif n:
        notes.append(f"packets carry no timestamps; timeline assumes a constant {fps:g} fps")
    timestamps = np.arange(n, dtype=np.float64) / fps
    return timestamps, None, False, fps, n / fps, notes


def upright_rotation(picture: av.VideoFrame) -> Tuple[int, List[str]]:
    """Clockwise degrees (0/90/180/270) that make ``picture`` upright, from its display matrix."""
    counter_clockwise = float(picture.rotation or 0)
    clockwise = (-counter_clockwise) % 360.0
    snapped = int(round(clockwise / 90.0)) % 4 * 90
    notes: List[str] = []
    gap = abs((clockwise - snapped + 180.0) % 360.0 - 180.0)
    if gap > 1.0:
        notes.append(f"display rotation {clockwise:g} deg rounded to {snapped} deg")
    return snapped, notes


def probe_with_index(path: str | Path, deadline: Optional[Deadline] = None) -> Tuple[VideoInfo, FrameIndex]:
    """Probe ``path`` and demux its video stream: (file facts, per-frame timeline).

    Raises :class:`VideoDecodeError` for missing/empty/non-video/truncated files and for streams
    with no decodable picture.
    """
    deadline = deadline or Deadline(path, None)
    size = check_file(path)
    with open_container(path) as container:
        stream = pick_video_stream(container, path)
        header = int(stream.frames or 0) or None
        codec = stream.codec_context.name
        has_audio = len(container.streams.audio) > 0
        scan = scan_packets(container, stream, deadline)
        if not scan.pts:
            cause = "no video frames in the file (empty stream or truncated data)"
            raise VideoDecodeError(path, cause + (f": {scan.error}" if scan.error else ""))
        if scan.first is None:
            raise VideoDecodeError(path, f"none of the {len(scan.pts)} video packets could be decoded")
        timestamps, ticks, has_pts, fps, duration, notes = build_timeline(
            scan.pts, scan.durations, stream.time_base, rate_of(stream)
        )
        pix_fmt = stream.codec_context.pix_fmt or scan.first.format.name
        time_base = stream.time_base
    first = scan.first
    rotation, rotation_notes = upright_rotation(first)
    notes.extend(rotation_notes)
    n = len(scan.pts)
    if scan.error:
        notes.append(f"demuxing stopped early after {scan.packets} packets ({scan.error})")
    if header is not None and header != n:
        note = f"header count corrected: the header says {header} frames, demuxing found {n}"
        if scan.discarded:
            note += f" ({scan.discarded} more marked as not displayed)"
        notes.append(note)
    stored_w, stored_h = int(first.width), int(first.height)
    width, height = (stored_h, stored_w) if rotation in (90, 270) else (stored_w, stored_h)
    info = VideoInfo(
        path=str(path),
        size_bytes=size,
        sha256=file_sha256(path),
        duration=float(duration),
        fps=float(fps),
        width=width,
        height=height,
        rotation=rotation,
        codec=str(codec),
        pix_fmt=str(pix_fmt),
        has_audio=has_audio,
        num_frames_header=header,
        num_frames=n,
    )
    index = FrameIndex(
        timestamps=timestamps,
        origin_ticks=int(ticks[0]) if ticks is not None else 0,
        pts_ticks=ticks,
        has_pts=has_pts,
        packets=scan.packets,
        discarded=scan.discarded,
        stored_width=stored_w,
        stored_height=stored_h,
        time_base=time_base,
        notes=notes,
    )
    return info, index


def probe_video(path: str | Path, timeout: Optional[float] = None) -> VideoInfo:
    """Facts about the video at ``path`` (see :class:`VideoInfo`); ``num_frames`` is the count
    found by demuxing. ``timeout``: seconds before giving up (None: no limit)."""
    info, _ = probe_with_index(path, Deadline(path, timeout))
    return info
