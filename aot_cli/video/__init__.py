"""Video decoding behind one interface.

``decode_video(path, cfg)`` chooses the video stream (FFmpeg's best, or ``cfg.stream``), predicts
its picture timeline by demuxing, chooses frames (:func:`sample_indices`) and reads them so that
frame ``k`` is the k-th picture of a plain sequential FFmpeg decode of that stream: keyframe-accurate
PyAV seeks (through the container's index, or by the byte offsets of the keyframe packets in
MPEG-TS/PS and ASF) that decode only what the wanted pictures depend on and check every picture, a
sequential PyAV read elsewhere, decord only when asked for (checked against PyAV's pictures).
Frames come back upright as torch.uint8 [F, H, W, 3] at the picture's display aspect (sample
aspect ratio applied), converted to RGB with the colour matrix and range the stream is tagged
with (as the ffmpeg CLI does), at native size or scaled inside FFmpeg to a target size. ``VIDEO_EXTENSIONS``: what a directory scan picks up.
"""
from .._lazy import lazy_exports

# public name -> the submodule defining it, imported on first use (PyAV and torch load with the
# decoder, not with the extension list a directory scan needs)
lazy_exports(__name__, {
    "decode_size": "decode", "decode_video": "decode", "VIDEO_EXTENSIONS": "formats",
    "DecodedVideo": "info", "FrameIndex": "info", "VideoDecodeError": "info", "VideoInfo": "info",
    "LOG_LEVELS": "logs", "file_sha256": "digest", "probe_video": "probe",
    "FrameSelection": "sampling", "check_decode_config": "sampling", "sample_indices": "sampling",
    "decoder_versions": "versions",
})

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
    "decoder_versions",
    "file_sha256",
    "probe_video",
    "sample_indices",
]
