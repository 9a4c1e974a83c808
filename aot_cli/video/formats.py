"""Which files are videos, which containers can be sought in accurately (through their own index or
by byte offset), and why FFmpeg cannot decode a file that it opens."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

#: File extensions (lower case, with the dot) a directory scan treats as videos: the containers
#: and raw streams FFmpeg reads as moving pictures, animated GIF included. Still-image formats
#: (.png, .jpg, .webp) are left out: FFmpeg reads them as one-picture "videos".
VIDEO_EXTENSIONS = frozenset({
    # MP4 / QuickTime family
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".f4v", ".mj2",
    # Matroska / WebM
    ".mkv", ".mk3d", ".webm",
    # AVI, ASF/WMV, FLV, Ogg, RealMedia, MXF, DV, NUT
    ".avi", ".divx", ".wmv", ".asf", ".flv", ".ogv", ".rm", ".rmvb", ".mxf", ".dv", ".nut",
    # MPEG program and transport streams (DVD, Blu-ray, camcorders)
    ".mpg", ".mpeg", ".mpe", ".m1v", ".m2v", ".vob", ".ts", ".m2t", ".m2ts", ".mts", ".tod", ".mod",
    # raw elementary streams
    ".h264", ".264", ".avc", ".hevc", ".h265", ".265", ".ivf", ".y4m", ".mjpeg", ".mjpg",
    # animated pictures
    ".gif",
})

#: FFmpeg demuxers whose files carry a real index (MP4 sample tables, Matroska cues) with one
#: presentation timestamp per picture, so a keyframe seek lands where the index says.
INDEXED_DEMUXERS = frozenset({"mov", "mp4", "matroska", "webm"})


#: FFmpeg demuxers without such an index that allow byte seeks: frame k is reached by seeking to
#: the byte offset of the keyframe packet before it, which the probe learns by demuxing.
BYTE_SEEK_DEMUXERS = frozenset({"mpegts", "mpeg", "asf"})


def byte_seek_container(format_name: str) -> bool:
    """Whether FFmpeg demuxer ``format_name`` is one of :data:`BYTE_SEEK_DEMUXERS`."""
    return bool(BYTE_SEEK_DEMUXERS & set(format_name.split(",")))


def indexed_container(format_name: str) -> bool:
    """Whether FFmpeg demuxer ``format_name`` (e.g. "mov,mp4,m4a,3gp,3g2,mj2") is one of
    :data:`INDEXED_DEMUXERS`."""
    return bool(INDEXED_DEMUXERS & set(format_name.split(",")))


def is_animated_webp(path: str | Path) -> bool:
    """Whether ``path`` is a RIFF/WebP file with animation chunks (``ANIM``/``ANMF``), which
    FFmpeg's WebP decoder cannot decode (it reads still pictures only)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP" and (b"ANIM" in head or b"ANMF" in head)


def undecodable_cause(path: str | Path, codec: str, first_error: Optional[str]) -> str:
    """One-line cause for a stream none of whose packets decode into a picture."""
    if codec == "webp" and is_animated_webp(path):
        return ("FFmpeg cannot decode it: animated WebP (codec 'webp'; FFmpeg's WebP decoder reads "
                "still pictures only); convert it to a video or GIF first")
    cause = f"FFmpeg cannot decode it: no picture of its '{codec}' video stream decodes"
    return cause + (f" (first error: {first_error})" if first_error else "")
