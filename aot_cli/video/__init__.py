"""Video decoding behind one interface.

``decode_video(path, cfg)`` probes the file, counts its frames by demuxing (headers can lie),
chooses frames (:func:`sample_indices`), reads them with decord when it is installed and agrees
with the demuxed timeline, else with PyAV, and returns them upright as torch.uint8 [F, H, W, 3].
"""
from .decode import decode_video
from .info import DecodedVideo, FrameIndex, VideoDecodeError, VideoInfo
from .probe import file_sha256, probe_video
from .sampling import FrameSelection, sample_indices

__all__ = [
    "DecodedVideo",
    "FrameIndex",
    "FrameSelection",
    "VideoDecodeError",
    "VideoInfo",
    "decode_video",
    "file_sha256",
    "probe_video",
    "sample_indices",
]
