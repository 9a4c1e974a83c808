"""SigLIP2 naflex towers (``Siglip2VisionModel``; a full ``Siglip2Model`` checkpoint loads only
its vision part). Fixed-resolution SigLIP2 checkpoints are ``siglip`` checkpoints and load
through :mod:`aot_cli.models.siglip`.

Frames are resized (aspect kept) to the largest size with at most ``max_num_patches`` patches,
so the patch grid follows the video's aspect ratio; all frames of a video share it, hence no
padding and no attention mask. Pixel values stay images ``[F, 3, h, w]``; the tower cuts them
into patches (row-major, each patch flattened as ``(py, px, channel)`` like the processor).
Features: ``last_hidden_state`` (post_layernorm), no CLS.
"""
from __future__ import annotations

import torch

from aot_cli.models.adapter import Tower, VisionAdapter
from aot_cli.models.common import LoadContext, base_info, image_spec, load_pretrained
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.preprocess import naflex_spec
from aot_cli.models.families import SIGLIP2_TYPES  # noqa: F401  (re-exported)
from aot_cli.models.profiles import select_profile
from aot_cli.models.siglip import vision_core


def patchify(pixel_values: torch.Tensor, patch: int) -> torch.Tensor:
    """Images [F, C, h, w] -> patches [F, (h/p)*(w/p), p*p*C], row-major over the grid."""
    frames, channels, height, width = pixel_values.shape
    grid_h, grid_w = height // patch, width // patch
    x = pixel_values[:, :, : grid_h * patch, : grid_w * patch]
    x = x.reshape(frames, channels, grid_h, patch, grid_w, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(frames, grid_h * grid_w, patch * patch * channels)


class Siglip2Tower(Tower):
    """SigLIP2: linear patch embedding on flattened patches + resized learned positions."""

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = patchify(pixel_values, self.patch_size)
        grid = (pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size)
        shapes = torch.tensor([grid], dtype=torch.long, device=pixel_values.device).expand(pixel_values.shape[0], 2)
        return self.embeddings(patches, shapes)


def load_siglip2(ctx: LoadContext) -> VisionAdapter:
    """A SigLIP2 naflex tower from a ``siglip2`` / ``siglip2_vision_model`` checkpoint."""
    from transformers import Siglip2VisionModel

    model = load_pretrained(ctx, Siglip2VisionModel, "the SigLIP2 vision tower", vision_use_head=False)
    core = vision_core(model)
    config = model.config
    spec = image_spec(ctx, naflex_spec(config.patch_size))
    if spec.patch_size != config.patch_size:
        raise ModelLoadError(
            f"{ctx.config_path}: processor patch_size {spec.patch_size} != model patch_size {config.patch_size}"
        )
    tower = Siglip2Tower(
        core.embeddings, list(core.encoder.layers), patch_size=config.patch_size,
        hidden_size=config.hidden_size, final_norm=core.post_layernorm,
    )
    profile = select_profile("siglip2", ctx.model_cfg.profile, has_newline=False, where=ctx.source.spec)
    info = base_info(
        ctx, "siglip2", "transformers", "Siglip2VisionModel",
        feature_layer=f"last_hidden_state: output of all {len(tower.layers)} layers, then post_layernorm",
    )
    return VisionAdapter(
        tower=tower, profile=profile, spec=spec, device=ctx.device, dtype=ctx.dtype,
        batch_frames=ctx.model_cfg.batch_frames, score_layers=ctx.model_cfg.score_layers, info=info,
    )
