"""``aot_qwen2_5_vl``: Qwen2.5-VL answering from an aot token cache.

Reads caches made with a Qwen2.5-VL checkpoint's vision side (profile ``qwen2.5-vl``): the
merger's tokens, each at its uncompressed M-RoPE position (docs/consumers.md, section 5). The LLM
is the checkpoint's ``Qwen2_5_VLForConditionalGeneration`` (loaded through
``AutoModelForImageTextToText``); model arguments: :mod:`.base`.
"""
from __future__ import annotations

from .base import AotCachedModel


class AotQwen2_5_VL(AotCachedModel):
    """Qwen2.5-VL answering from cached tokens."""

    MODEL_NAME = "aot_qwen2_5_vl"
