"""``aot_qwen3_5``: Qwen3.5 answering from an aot token cache.

Reads caches made with a Qwen3.5 checkpoint's vision side (profile ``qwen3.5``; ``qwen3_5`` and
``qwen3_5_moe`` checkpoints): the merger's tokens, each at its uncompressed M-RoPE position, one
timestamped block per temporal patch (docs/consumers.md, section 5). The LLM is loaded through
``AutoModelForImageTextToText``; model arguments: :mod:`.base`.
"""
from __future__ import annotations

from .base import AotCachedModel


class AotQwen3_5(AotCachedModel):
    """Qwen3.5 answering from cached tokens."""

    MODEL_NAME = "aot_qwen3_5"
