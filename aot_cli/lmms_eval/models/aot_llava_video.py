"""``aot_llava_video``: :mod:`.aot_llava_onevision` for LLaVA-Video checkpoints.

It reads caches made with a LLaVA-Video checkpoint's vision side: average 2x2 pooling and a
newline after every run of tokens from one frame row (``meta["newline"] == "grid"``), the
arrangement the original LLaVA-Video code gives the LLM. The LLM is the checkpoint's
transformers ``LlavaOnevisionForConditionalGeneration``; the model arguments are those of
``aot_llava_onevision``. A cache made for LLaVA-OneVision is refused with one line.
"""
from __future__ import annotations

from .aot_llava_onevision import AotLlavaOneVision


class AotLlavaVideo(AotLlavaOneVision):
    """LLaVA-Video answering from cached tokens."""

    MODEL_NAME = "aot_llava_video"
    FAMILY = "llava-video"
