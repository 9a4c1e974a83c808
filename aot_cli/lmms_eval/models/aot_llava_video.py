"""``aot_llava_video``: LLaVA-Video answering from an aot token cache.

Reads caches made with a LLaVA-Video checkpoint's vision side (profile ``llava-video``): average
2x2 pooling and a newline after every run of tokens from one frame row (``meta["newline"] ==
"grid"``), the arrangement the original LLaVA-Video code gives the LLM. The LLM is the
checkpoint's transformers ``LlavaOnevisionForConditionalGeneration``; model arguments:
:mod:`.base`. A cache made for LLaVA-OneVision is refused with one line.
"""
from __future__ import annotations

from .base import AotCachedModel


class AotLlavaVideo(AotCachedModel):
    """LLaVA-Video answering from cached tokens."""

    MODEL_NAME = "aot_llava_video"
