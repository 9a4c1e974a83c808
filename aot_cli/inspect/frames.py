"""Decoding again the frames a cached video was made from, for the contact sheet: the same file
(same sha256), the recorded decode settings and decoder, never more frames than the cache holds."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .marks import MAX_OVERLAY_FRAMES, frame_count
from .output import PictureError, one_line

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
