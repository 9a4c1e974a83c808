"""``aot_llava_onevision``: LLaVA-OneVision answering from an aot token cache.

Reads caches made with a LLaVA-OneVision checkpoint's vision side (profile ``llava-onevision``,
one newline after the video); the LLM is the checkpoint's transformers
``LlavaOnevisionForConditionalGeneration``. Model arguments: :mod:`.base`.
"""
from __future__ import annotations

from .base import AotCachedModel


class AotLlavaOneVision(AotCachedModel):
    """LLaVA-OneVision answering from cached tokens."""

    MODEL_NAME = "aot_llava_onevision"
