"""``aot_qwen3_vl``: Qwen3-VL answering from an aot token cache.

Reads caches made with a Qwen3-VL checkpoint's vision side (profile ``qwen3-vl``; ``qwen3_vl`` and
``qwen3_vl_moe`` checkpoints): the merger's tokens with their DeepStack rows, each at its
uncompressed M-RoPE position, one timestamped block per temporal patch (docs/consumers.md,
section 5). The LLM is loaded through ``AutoModelForImageTextToText``; model arguments: :mod:`.base`.
"""
from __future__ import annotations

from .base import AotCachedModel


class AotQwen3VL(AotCachedModel):
    """Qwen3-VL answering from cached tokens."""

    MODEL_NAME = "aot_qwen3_vl"
