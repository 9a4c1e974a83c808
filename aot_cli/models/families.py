"""Which ``config.json`` each model family reads (``model_type`` values), and the check that a
checkpoint belongs to a supported family. Plain data, no torch: the flag checks and the cache
fingerprint use it before any model code is imported."""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

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


def qwen_full_attention(family: str, vision: Dict[str, Any]) -> Tuple[int, ...]:
    """The blocks of a Qwen tower (its ``vision_config`` as a dict) that attend over the whole
    frame: Qwen2.5-VL's ``fullatt_block_indexes`` (the others attend inside windows), every block
    of the others."""
    if family == "qwen2.5-vl":
        return tuple(int(i) for i in vision.get("fullatt_block_indexes") or ())
    return tuple(range(int(vision.get("depth", 0) or 0)))


def check_qwen_score_layers(family: str, vision: Dict[str, Any], layers: Sequence[int], where: str) -> None:
    """ModelLoadError (one line) when a ``--score-layers`` entry of a Qwen2.5-VL tower names a block
    that attends inside windows (received attention needs a block that sees the whole frame).
    Indices out of range are left to the adapter's own check."""
    if family != "qwen2.5-vl":
        return
    depth = int(vision.get("depth", 0) or 0)
    full = qwen_full_attention(family, vision)
    for given in layers:
        if depth and -depth <= int(given) < depth and int(given) % depth not in full:
            raise ModelLoadError(
                f"--score-layers: block {given} of {where} attends inside windows; scores need a block that attends "
                f"over the whole frame: {', '.join(str(i) for i in full)} (fullatt_block_indexes)")


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
