"""Video decoding behind one interface.

``decode_video(path, cfg)`` chooses the video stream (FFmpeg's best, or ``cfg.stream``), predicts
its picture timeline by demuxing, chooses frames (:func:`sample_indices`) and reads them so that
frame ``k`` is the k-th picture of a plain sequential FFmpeg decode of that stream: keyframe-accurate
PyAV seeks where the container's index allows it (every picture checked against the index), a
sequential PyAV read elsewhere, decord only when asked for (checked against PyAV's pictures). Frames come back upright as torch.uint8 [F, H, W, 3], at native
size or scaled inside FFmpeg to a target size. ``VIDEO_EXTENSIONS``: what a directory scan picks up.
"""
from .decode import decode_size, decode_video
from .formats import VIDEO_EXTENSIONS
from .info import DecodedVideo, FrameIndex, VideoDecodeError, VideoInfo
from .logs import LOG_LEVELS
from .probe import file_sha256, probe_video
from .sampling import FrameSelection, check_decode_config, sample_indices

__all__ = [
    "DecodedVideo",
    "FrameIndex",
    "FrameSelection",
    "LOG_LEVELS",
    "VIDEO_EXTENSIONS",
    "VideoDecodeError",
    "VideoInfo",
    "check_decode_config",
    "decode_size",
    "decode_video",
    "file_sha256",
    "probe_video",
    "sample_indices",
]
