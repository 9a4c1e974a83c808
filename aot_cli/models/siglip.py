"""SigLIP towers (``SiglipVisionModel``; a full ``SiglipModel`` checkpoint loads only its vision
part, without the pooling head).

Features: ``last_hidden_state`` as the tower outputs it (all layers, then ``post_layernorm``).
No CLS token, so every token is a patch. :func:`siglip_tower_from_tensors` builds a tower from
raw tensors for the LLaVA checkpoints (only the layers that run, no post-layernorm).
"""
from __future__ import annotations

import copy
from typing import Dict, Sequence

import torch
from torch import nn

from aot_cli.models.adapter import Tower, VisionAdapter
from aot_cli.models.common import LoadContext, base_info, image_spec, load_pretrained, require_fixed_size
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.preprocess import square_spec
from aot_cli.models.families import SIGLIP_TYPES  # noqa: F401  (re-exported)
from aot_cli.models.profiles import select_profile


class SiglipTower(Tower):
    """SigLIP: patch-embedding conv + learned positions, pre-LN encoder layers (``self_attn``)."""


def vision_core(model: nn.Module) -> nn.Module:
    """The module holding ``embeddings`` / ``encoder`` / ``post_layernorm`` (transformers 5
    keeps them on the model, 4.x on ``model.vision_model``)."""
    return getattr(model, "vision_model", model)


def load_siglip(ctx: LoadContext) -> VisionAdapter:
    """A plain SigLIP tower from a ``siglip`` / ``siglip_vision_model`` checkpoint."""
    from transformers import SiglipVisionModel

    model = load_pretrained(ctx, SiglipVisionModel, "the SigLIP vision tower", vision_use_head=False)
    core = vision_core(model)
    config = model.config
    spec = image_spec(ctx, square_spec(config.image_size))
    require_fixed_size(spec, config.image_size, ctx.config_path)
    tower = SiglipTower(
        core.embeddings, list(core.encoder.layers), patch_size=config.patch_size,
        hidden_size=config.hidden_size, final_norm=core.post_layernorm,
    )
    name = "siglip2" if "siglip2" in ctx.source.spec.lower() else "siglip"
    profile = select_profile(name, ctx.model_cfg.profile, has_newline=False, where=ctx.source.spec)
    info = base_info(
        ctx, name, "transformers", "SiglipVisionModel",
        feature_layer=f"last_hidden_state: output of all {len(tower.layers)} layers, then post_layernorm",
    )
    return VisionAdapter(
        tower=tower, profile=profile, spec=spec, device=ctx.device, dtype=ctx.dtype,
        batch_frames=ctx.model_cfg.batch_frames, score_layers=ctx.model_cfg.score_layers, info=info,
    )


def siglip_tower_from_tensors(
    vision_config,
    tensors: Dict[str, torch.Tensor],
    feature_states: Sequence[int],
    device: torch.device,
    dtype: torch.dtype,
    where: str,
) -> SiglipTower:
    """A SigLIP tower whose weights are ``tensors`` (names relative to the vision model:
    ``embeddings.*``, ``encoder.layers.{i}.*``), building only the first
    ``max(feature_states)`` layers, no post-layernorm and no head. The modules are created on the
    meta device and take the given tensors directly, so nothing is initialised twice."""
    from transformers import SiglipVisionModel

    config = copy.deepcopy(vision_config)
    config.num_hidden_layers = max(feature_states)
    config.vision_use_head = False
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = SiglipVisionModel(config)
    core = vision_core(model)
    wanted = {k for k in core.state_dict() if not k.startswith(("post_layernorm.", "head."))}
    missing = sorted(wanted - set(tensors))
    if missing:
        raise ModelLoadError(f"{where}: vision tower tensor '{missing[0]}' is missing from the checkpoint")
    state = {k: tensors[k].to(device=device, dtype=dtype) for k in wanted}
    for key, value in state.items():
        expected = tuple(core.state_dict()[key].shape)
        if tuple(value.shape) != expected:
            raise ModelLoadError(f"{where}: tensor '{key}' has shape {tuple(value.shape)}, expected {expected}")
    core.load_state_dict(state, strict=False, assign=True)
    _restore_position_ids(core.embeddings, device)
    return SiglipTower(
        core.embeddings, list(core.encoder.layers), patch_size=config.patch_size,
        hidden_size=config.hidden_size, final_norm=None, feature_states=feature_states,
    )


def _restore_position_ids(embeddings: nn.Module, device: torch.device) -> None:
    """Recreate the non-persistent ``position_ids`` buffer (left on the meta device)."""
    count = embeddings.position_embedding.weight.shape[0]
    embeddings.register_buffer("position_ids", torch.arange(count, device=device).expand((1, -1)), persistent=False)
