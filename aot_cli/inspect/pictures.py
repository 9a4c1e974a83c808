"""Pictures of cached videos, for people: the public entry points, by concern in their modules.

- :func:`render_overlay` (:mod:`.overlay`): a contact sheet of one cached video, its frames decoded
  again (:mod:`.frames`) with what the method did drawn on them (:mod:`.marks`, :mod:`.drawing`),
  sized to fit a screen (:mod:`.layout`).
- :func:`plot_tokens_per_frame` and :func:`plot_ratio_sweep` (:mod:`.plots`, matplotlib).

Every picture is written atomically; :class:`PictureError` (one line, naming the file concerned)
when one cannot be made.
"""
from __future__ import annotations

from .marks import MAX_OVERLAY_FRAMES, MAX_PLOT_FRAMES, FrameMarks, frame_marks, resolve_video_id
from .output import PictureError
from .overlay import OverlayResult, render_overlay
from .plots import plot_ratio_sweep, plot_tokens_per_frame, require_matplotlib

__all__ = ["render_overlay", "OverlayResult", "plot_tokens_per_frame", "plot_ratio_sweep", "require_matplotlib",
           "PictureError", "FrameMarks", "frame_marks", "resolve_video_id", "MAX_OVERLAY_FRAMES", "MAX_PLOT_FRAMES"]
