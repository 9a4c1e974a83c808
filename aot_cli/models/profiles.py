"""Per-family defaults the pipeline reads: frames to sample, spatial pooling, clip length,
newline placement and the two attention layers that score tokens (docs/method.md §1, §4, §5).

Profiles are plain data. A model's profile comes from its family; LLaVA checkpoints are told
apart as OneVision or Video by :func:`llava_profile_name`, and ``ModelConfig.profile`` overrides
the choice.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from aot_cli.models.errors import ModelLoadError

DEFAULT_SCORE_LAYERS: Tuple[int, int] = (5, -2)


@dataclass(frozen=True)
class ModelProfile:
    """What the method needs to know about a model family.

    ``name``: "siglip" | "siglip2" | "clip" | "dinov2" | "llava-onevision" | "llava-video".
    ``default_frames``: frames sampled per video when the user gives none.
    ``pooling``: 2x2 spatial pooling after the intra-frame merge: "bilinear" (ceil size, as
    LLaVA-OneVision), "average" (avg_pool2d, as LLaVA-Video) or None (plain towers).
    ``clip_length``: frames per clip of the inter-frame merge (the first one is the keyframe).
    ``newline``: how the model's image_newline is placed: "one_token" (once after the video),
    "grid" (after every row of every frame) or None (no newline parameter).
    ``score_layers``: (shallow, deep) attention-map indices, 0-based over the layers that run,
    negative counting from the last layer that runs (Qwen adapters replace them with the
    checkpoint's own defaults).
    ``token_order``: how cached tokens are ordered: "method" (as the method emits them, the
    LLaVA convention) or "grid" (by frame, then cell: the order of the LLM sequence for models whose
    positions follow the grid, the Qwen families).
    ``keyframe_once``: the default of ``AOTConfig.keyframe_once`` for this profile (the user's
    setting wins): Qwen profiles emit a clip's keyframe once, so no two cached tokens share a cell.
    """

    name: str
    default_frames: int
    pooling: Optional[str]
    clip_length: int
    newline: Optional[str]
    score_layers: Tuple[int, int] = DEFAULT_SCORE_LAYERS
    token_order: str = "method"
    keyframe_once: bool = False

    def to_dict(self) -> dict:
        """JSON-ready copy (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["score_layers"] = list(self.score_layers)
        return data


PROFILES: Dict[str, ModelProfile] = {
    "siglip": ModelProfile("siglip", 32, None, 4, None),
    "siglip2": ModelProfile("siglip2", 32, None, 4, None),
    "clip": ModelProfile("clip", 32, None, 4, None),
    "dinov2": ModelProfile("dinov2", 32, None, 4, None),
    "llava-onevision": ModelProfile("llava-onevision", 32, "bilinear", 4, "one_token"),
    "llava-video": ModelProfile("llava-video", 64, "average", 8, "grid"),
    # Qwen families: the method's frames are temporal patches (2 sampled frames) on the merged grid
    # the model's own 2x2 merger makes, so no pooling; clips of 4 temporal patches (8 frames).
    "qwen2.5-vl": ModelProfile("qwen2.5-vl", 32, None, 4, None, token_order="grid", keyframe_once=True),
    "qwen3-vl": ModelProfile("qwen3-vl", 32, None, 4, None, token_order="grid", keyframe_once=True),
    "qwen3.5": ModelProfile("qwen3.5", 32, None, 4, None, token_order="grid", keyframe_once=True),
}
QWEN_PROFILES = ("qwen2.5-vl", "qwen3-vl", "qwen3.5")

LLAVA_PROFILES = ("llava-onevision", "llava-video")
_VIDEO_NAME_MARKERS = ("llava-video", "llava_video", "llavavideo")


def looks_like_llava_video(*names: Optional[str]) -> bool:
    """True when any of ``names`` (model id, path, ``_name_or_path``) names a LLaVA-Video
    checkpoint, e.g. ``llava-hf/LLaVA-Video-7B-Qwen2-hf`` (case-insensitive)."""
    return any(marker in (name or "").lower() for name in names for marker in _VIDEO_NAME_MARKERS)


def select_profile(family_profile: str, override: Optional[str], has_newline: bool, where: str) -> ModelProfile:
    """The profile to use: ``override`` (``ModelConfig.profile``) when given, else
    ``family_profile``. A plain tower may borrow a LLaVA profile's pooling and clip settings; its
    ``newline`` is then None because it has no newline parameter. ``where`` names the model in
    the error message."""
    name = override or family_profile
    if name not in PROFILES:
        raise ModelLoadError(f"{where}: unknown profile '{name}' (choose from {', '.join(PROFILES)})")
    if (name in QWEN_PROFILES or family_profile in QWEN_PROFILES) and name != family_profile:
        raise ModelLoadError(f"--profile {name}: {where} is a {family_profile} checkpoint; the Qwen profiles "
                             "only fit their own family (leave --profile out)")
    profile = PROFILES[name]
    if not has_newline and profile.newline is not None:
        profile = dataclasses.replace(profile, newline=None)
    return profile
