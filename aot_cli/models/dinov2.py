"""DINOv2 towers (``Dinov2Model``, and ``Dinov2WithRegistersModel``).

Features: the patch tokens of ``last_hidden_state`` (all layers, then the final layernorm); the
CLS token and any register tokens are dropped. Scores are computed over all tokens and only
the patch keys are reported (as for CLIP).
"""
from __future__ import annotations

from torch import nn

from aot_cli.models.adapter import Tower, VisionAdapter
from aot_cli.models.common import LoadContext, base_info, image_spec, load_pretrained
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.preprocess import dinov2_spec
from aot_cli.models.families import DINOV2_TYPES  # noqa: F401  (re-exported)
from aot_cli.models.profiles import select_profile


class Dinov2Tower(Tower):
    """DINOv2: position embeddings interpolated to the input size, so any crop size works."""

    def attention(self, index: int) -> nn.Module:
        module = self.layers[index].attention
        # transformers 4.x nests the q/k/v projections one level deeper
        return module if hasattr(module, "q_proj") else module.attention


def load_dinov2(ctx: LoadContext) -> VisionAdapter:
    """A DINOv2 tower from a ``dinov2`` / ``dinov2_with_registers`` checkpoint."""
    import transformers

    registers = ctx.config.get("model_type") == "dinov2_with_registers"
    model_class = transformers.Dinov2WithRegistersModel if registers else transformers.Dinov2Model
    model = load_pretrained(ctx, model_class, "the DINOv2 tower")
    config = model.config
    spec = image_spec(ctx, dinov2_spec())
    if spec.crop is None and spec.resize != "exact":
        raise ModelLoadError(f"{ctx.config_path}: DINOv2 preprocessing must end in a fixed size (crop or exact resize)")
    prefix = 1 + int(getattr(config, "num_register_tokens", 0) if registers else 0)
    tower = Dinov2Tower(
        model.embeddings, list(model.encoder.layer), patch_size=config.patch_size,
        hidden_size=config.hidden_size, final_norm=model.layernorm, prefix_tokens=prefix,
    )
    profile = select_profile("dinov2", ctx.model_cfg.profile, has_newline=False, where=ctx.source.spec)
    info = base_info(
        ctx, "dinov2", "transformers", model_class.__name__,
        feature_layer=f"last_hidden_state: output of all {len(tower.layers)} layers, then layernorm;"
        f" {prefix} leading token(s) (CLS, registers) dropped",
    )
    return VisionAdapter(
        tower=tower, profile=profile, spec=spec, device=ctx.device, dtype=ctx.dtype,
        batch_frames=ctx.model_cfg.batch_frames, score_layers=ctx.model_cfg.score_layers, info=info,
    )
