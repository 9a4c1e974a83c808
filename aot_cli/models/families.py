"""Which ``config.json`` each model family reads (``model_type`` values), and the check that a
checkpoint belongs to a supported family. Plain data, no torch: the flag checks and the cache
fingerprint use it before any model code is imported."""
from __future__ import annotations

from typing import Any, Dict

from aot_cli.models.errors import ModelLoadError

SIGLIP_TYPES = ("siglip", "siglip_vision_model")
SIGLIP2_TYPES = ("siglip2", "siglip2_vision_model")
CLIP_TYPES = ("clip", "clip_vision_model")
DINOV2_TYPES = ("dinov2", "dinov2_with_registers")
LLAVA_HF_TYPES = ("llava_onevision",)
#: Qwen-family video LLMs (``model_type`` -> family / profile name); the MoE variants share the tower.
QWEN_TYPES = {"qwen2_5_vl": "qwen2.5-vl", "qwen3_vl": "qwen3-vl", "qwen3_vl_moe": "qwen3-vl",
              "qwen3_5": "qwen3.5", "qwen3_5_moe": "qwen3.5"}
#: Every supported ``model_type`` (LLaVA-NeXT checkpoints are recognised by ``mm_vision_tower``).
SUPPORTED_TYPES = SIGLIP_TYPES + SIGLIP2_TYPES + CLIP_TYPES + DINOV2_TYPES + LLAVA_HF_TYPES + tuple(QWEN_TYPES)


def qwen_family(model_type: Any) -> str:
    """The family ("qwen2.5-vl", "qwen3-vl", "qwen3.5") of a Qwen ``model_type``; KeyError otherwise."""
    return QWEN_TYPES[model_type]


def check_supported(config: Dict[str, Any], where: str) -> None:
    """Raise ModelLoadError (one line naming ``where``, the config file) unless ``config`` is a
    LLaVA-NeXT config (``mm_vision_tower``) or has a supported ``model_type``."""
    if "mm_vision_tower" in config or config.get("model_type") in SUPPORTED_TYPES:
        return
    supported = ", ".join(sorted(SUPPORTED_TYPES))
    raise ModelLoadError(
        f"{where}: model_type '{config.get('model_type')}' is not supported"
        f" (supported: {supported}, or a LLaVA-NeXT config with mm_vision_tower)"
    )
