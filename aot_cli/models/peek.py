"""What the pipeline can learn about a checkpoint from its config files alone, before any weight
is read: the model profile (frames, pooling, clip length) and, for towers whose input size is
fixed by the checkpoint, the tower's patch grid. Used to refuse budgets that cannot be met before a
model loads (docs/method.md §4, §5 and the budget planner), and to record nothing: the loaded
adapter stays the authority for everything it writes.

A grid is reported only when the config files determine it: SigLIP / CLIP towers and
transformers-format LLaVA checkpoints (``image_size // patch_size`` of the vision config), DINOv2
(the preprocessing's output size // ``patch_size``). SigLIP2 naflex and Qwen-family grids follow
each video's frame size, and LLaVA-NeXT checkpoints keep their geometry in the weights: ``grid``
is None there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from aot_cli.config import ModelConfig
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.families import (CLIP_TYPES, DINOV2_TYPES, LLAVA_HF_TYPES, QWEN_TYPES, SIGLIP2_TYPES, SIGLIP_TYPES,
                                     check_qwen_score_layers, check_supported)
from aot_cli.models.image_spec import dinov2_spec, spec_from_processor_config
from aot_cli.models.profiles import ModelProfile, looks_like_llava_video, select_profile
from aot_cli.models.runtime import checkpoint_dtype
from aot_cli.models.source import CONFIG_FILE, ModelSource


@dataclass(frozen=True)
class CheckpointPeek:
    """``profile``: the profile the loader will use (``ModelConfig.profile`` applied);
    ``grid``: the tower's (rows, cols) of patches when the config files fix it, else None;
    ``dtype``: the dtype config.json records the weights in
    (:func:`~aot_cli.models.runtime.checkpoint_dtype`; None when it records none)."""

    profile: ModelProfile
    grid: Optional[Tuple[int, int]]
    dtype: Optional[str] = None


def _positive_int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _square_grid(vision: Dict[str, Any]) -> Optional[Tuple[int, int]]:
    size, patch = _positive_int(vision.get("image_size")), _positive_int(vision.get("patch_size"))
    if size is None or patch is None:
        return None
    return size // patch, size // patch


def _family(source: ModelSource, config: Dict[str, Any]) -> Tuple[str, Optional[Tuple[int, int]]]:
    """(family profile name, grid or None), as the family loaders decide them."""
    where = source.location(CONFIG_FILE)
    if "mm_vision_tower" in config:  # LLaVA-NeXT layout: geometry lives in the weights
        video = config.get("mm_newline_position") == "grid" or config.get("mm_spatial_pool_mode") == "average"
        return ("llava-video" if video else "llava-onevision"), None
    model_type = config.get("model_type")
    vision = config.get("vision_config") if isinstance(config.get("vision_config"), dict) else config
    if model_type in LLAVA_HF_TYPES:
        video = looks_like_llava_video(source.spec, str(source.root), config.get("_name_or_path"))
        return ("llava-video" if video else "llava-onevision"), _square_grid(vision)
    if model_type in SIGLIP_TYPES:
        return ("siglip2" if "siglip2" in source.spec.lower() else "siglip"), _square_grid(vision)
    if model_type in CLIP_TYPES:
        return "clip", _square_grid(vision)
    if model_type in SIGLIP2_TYPES:
        return "siglip2", None
    if model_type in QWEN_TYPES:  # the merged grid follows each video's size (and frame count)
        return QWEN_TYPES[model_type], None
    if model_type in DINOV2_TYPES:
        patch = _positive_int(config.get("patch_size"))
        processor = source.json("preprocessor_config.json") or {}
        spec = spec_from_processor_config(processor, dinov2_spec(), where)
        size = spec.crop if spec.crop is not None else (spec.size if spec.resize == "exact" else None)
        if patch is None or size is None:
            return "dinov2", None
        return "dinov2", (size[0] // patch, size[1] // patch)
    raise ModelLoadError(f"{where}: no profile for model_type {model_type!r}")


def peek_checkpoint(source: ModelSource, model_cfg: ModelConfig) -> CheckpointPeek:
    """The profile and (when fixed) tower grid of the checkpoint at ``source``, from
    ``config.json`` and the preprocessing config only. Raises ModelLoadError (one line) for an
    unsupported family, an unknown ``--profile``, or Qwen2.5-VL score layers that attend inside
    windows."""
    config = source.json(CONFIG_FILE)
    if not isinstance(config, dict):
        raise ModelLoadError(f"{source.location(CONFIG_FILE)}: config.json is missing or not an object")
    check_supported(config, source.location(CONFIG_FILE))  # the loader's own error for an unsupported family
    family, grid = _family(source, config)
    profile = select_profile(family, model_cfg.profile, has_newline=True, where=source.spec)
    if family in QWEN_TYPES.values() and model_cfg.score_layers is not None:
        vision = config.get("vision_config") if isinstance(config.get("vision_config"), dict) else {}
        check_qwen_score_layers(family, vision, model_cfg.score_layers, source.spec)
    return CheckpointPeek(profile=profile, grid=grid, dtype=checkpoint_dtype(config))
