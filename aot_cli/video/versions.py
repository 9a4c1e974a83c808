"""The decoding libraries' versions, recorded in every cache (``meta["versions"]``): PyAV and the
FFmpeg libraries it was built with decide the pictures (decoders, colour conversion, scaling)."""
from __future__ import annotations

from typing import Dict

#: The FFmpeg libraries whose versions change decoded pictures.
LIBRARIES = ("libavcodec", "libavformat", "libavutil", "libswscale")


def decoder_versions() -> Dict[str, str]:
    """``{"pyav": "15.1.0", "ffmpeg": "7.1.1 (libavcodec 61.19.101, libavformat 61.7.100, ...)"}``:
    PyAV's version and the FFmpeg release and library versions it runs on."""
    import av

    libraries = getattr(av, "library_versions", {}) or {}
    parts = [f"{name} {'.'.join(str(v) for v in libraries[name])}" for name in LIBRARIES if name in libraries]
    release = str(getattr(av, "ffmpeg_version_info", "") or "unknown")
    return {"pyav": str(av.__version__), "ffmpeg": f"{release} ({', '.join(parts)})" if parts else release}
