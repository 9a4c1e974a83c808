"""CLIP towers (``CLIPVisionModel``; a full ``CLIPModel`` checkpoint such as
``openai/clip-vit-large-patch14-336`` loads only its vision part).

Features, LLaVA style: the penultimate layer's hidden state (the last encoder layer does not
run), no post-layernorm, CLS token dropped. Scores are computed over all tokens (the softmax
includes the CLS key and the CLS query is summed like any other), then only the patch keys are
reported.
"""
from __future__ import annotations

import torch

from aot_cli.models.adapter import Tower, VisionAdapter
from aot_cli.models.common import LoadContext, base_info, image_spec, load_pretrained, require_fixed_size
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.preprocess import clip_spec
from aot_cli.models.families import CLIP_TYPES  # noqa: F401  (re-exported)
from aot_cli.models.profiles import select_profile
from aot_cli.models.siglip import vision_core


class ClipTower(Tower):
    """CLIP: class token + patch conv + positions, then ``pre_layrnorm`` before the encoder."""

    def __init__(self, pre_norm: torch.nn.Module, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pre_norm = pre_norm

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.pre_norm(self.embeddings(pixel_values))


def load_clip(ctx: LoadContext) -> VisionAdapter:
    """A CLIP tower from a ``clip`` / ``clip_vision_model`` checkpoint."""
    from transformers import CLIPVisionModel

    model = load_pretrained(ctx, CLIPVisionModel, "the CLIP vision tower")
    core = vision_core(model)
    config = model.config
    if config.num_hidden_layers < 2:
        raise ModelLoadError(f"{ctx.config_path}: CLIP features use the penultimate layer; the tower has one layer")
    spec = image_spec(ctx, clip_spec(config.image_size))
    require_fixed_size(spec, config.image_size, ctx.config_path)
    layers = list(core.encoder.layers)[:-1]
    tower = ClipTower(
        core.pre_layrnorm, core.embeddings, layers, patch_size=config.patch_size,
        hidden_size=config.hidden_size, final_norm=None, prefix_tokens=1,
    )
    profile = select_profile("clip", ctx.model_cfg.profile, has_newline=False, where=ctx.source.spec)
    info = base_info(
        ctx, "clip", "transformers", "CLIPVisionModel",
        feature_layer=f"hidden_states[-2]: output of layer {len(layers)} of {config.num_hidden_layers}"
        " (the last layer does not run), no post_layernorm, CLS dropped",
    )
    return VisionAdapter(
        tower=tower, profile=profile, spec=spec, device=ctx.device, dtype=ctx.dtype,
        batch_frames=ctx.model_cfg.batch_frames, score_layers=ctx.model_cfg.score_layers, info=info,
    )
