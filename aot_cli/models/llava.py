"""LLaVA-OneVision / LLaVA-Video vision side: SigLIP tower, projector and ``image_newline``,
read straight from the checkpoint's safetensors shards (the language model is never built and
its tensors are never read).

Two checkpoint formats:

- transformers (``llava-hf/...``, ``model_type: llava_onevision``): the tower geometry is
  ``vision_config``; features follow ``vision_feature_layer`` (int or list of hidden-state
  indices, default -1) and ``vision_feature_select_strategy`` ("full"; "default" would drop the
  first token, which SigLIP does not have, so it is refused) exactly as
  ``LlavaOnevisionModel.get_image_features`` selects them, i.e. a layer's output before
  ``post_layernorm``; projector ``multi_modal_projector.linear_1/2`` with
  ``projector_hidden_act``. Tower weights may be stored as ``vision_tower.*``,
  ``vision_tower.vision_model.*`` or ``model.vision_tower.*``.
- LLaVA-NeXT (``lmms-lab/...``: ``config.json`` has ``mm_vision_tower``): the tower is SigLIP with
  its last encoder layer already removed and no head; features are the last remaining layer's
  output before ``post_layernorm``. The vision config is not in the checkpoint: heads, eps and
  activation come from the known SigLIP-so400m geometry, while width, MLP width, patch size,
  grid (hence image size) and layer count are read from the tensors present. Weights:
  ``model.vision_tower.vision_tower.vision_model.*``, ``model.mm_projector.{0,2}.*``
  (``mm_projector_type`` ``linear`` or ``mlpNx_gelu``), ``model.image_newline``.

OneVision or Video: ``ModelConfig.profile`` wins; otherwise a NeXT checkpoint with
``mm_newline_position == "grid"`` or ``mm_spatial_pool_mode == "average"`` is LLaVA-Video, and a
transformers checkpoint (LLaVA-Video is also ``llava_onevision`` there) is LLaVA-Video when its id,
path or ``_name_or_path`` contains "llava-video"/"llava_video"; everything else is OneVision.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from aot_cli.models.adapter import VisionAdapter
from aot_cli.models.common import (
    VIDEO_PROCESSOR_FILES, LoadContext, base_info, feature_positions, image_spec, require_fixed_size,
)
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.preprocess import square_spec
from aot_cli.models.profiles import looks_like_llava_video, select_profile
from aot_cli.models.siglip import siglip_tower_from_tensors
from aot_cli.models.source import WeightReader

LLAVA_HF_TYPES = ("llava_onevision",)
PATCH_WEIGHT = "embeddings.patch_embedding.weight"
POSITION_WEIGHT = "embeddings.position_embedding.weight"
# SigLIP-so400m facts that the NeXT checkpoints do not record (the rest is read off the tensors).
NEXT_TOWER_DEFAULTS = {"num_attention_heads": 16, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh"}
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")
_MLP_GELU = re.compile(r"^mlp(\d+)x_gelu$")


class MlpProjector(nn.Module):
    """``Linear -> act -> Linear -> ... -> Linear`` mapping tower features [.., C] to LLM width [.., D]."""

    def __init__(self, linears: Sequence[nn.Linear], activation: nn.Module) -> None:
        super().__init__()
        self.linears = nn.ModuleList(linears)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.linears) - 1
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < last:
                x = self.activation(x)
        return x


def _linear(weight: torch.Tensor, bias: Optional[torch.Tensor], device: torch.device, dtype: torch.dtype) -> nn.Linear:
    """An ``nn.Linear`` holding exactly ``weight`` [out, in] and ``bias`` [out] (or none)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    state = {"weight": weight.to(device=device, dtype=dtype)}
    if bias is not None:
        state["bias"] = bias.to(device=device, dtype=dtype)
    linear.load_state_dict(state, assign=True)
    return linear


def find_prefix(names: Sequence[str], suffix: str, marker: str, where: str) -> str:
    """The unique prefix ``p`` such that ``p + suffix`` is a tensor name containing ``marker``."""
    hits = sorted({n[: -len(suffix)] for n in names if n.endswith(suffix) and marker in n})
    if len(hits) != 1:
        found = "none" if not hits else ", ".join(hits)
        raise ModelLoadError(f"{where}: expected one '*{marker}*{suffix}' tensor, found {found}")
    return hits[0]


def find_optional(names: Sequence[str], leaf: str) -> Optional[str]:
    """The tensor named ``leaf`` or ``*.leaf`` (shortest match), or None."""
    hits = sorted((n for n in names if n == leaf or n.endswith("." + leaf)), key=len)
    return hits[0] if hits else None


def tower_tensor_names(names: Sequence[str], prefix: str, layers_run: Optional[int]) -> List[str]:
    """Names under ``prefix`` that a tower running ``layers_run`` layers (all when None) needs:
    the embeddings and those layers (no post-layernorm, no head)."""
    wanted = []
    for name in names:
        if not name.startswith(prefix):
            continue
        rel = name[len(prefix) :]
        match = _LAYER.match(rel)
        if rel.startswith("embeddings.") or (match and (layers_run is None or int(match.group(1)) < layers_run)):
            wanted.append(name)
    return wanted


def present_layers(names: Sequence[str], prefix: str, where: str) -> int:
    """Number of encoder layers stored under ``prefix`` (they must be numbered 0..n-1)."""
    found = sorted({int(m.group(1)) for n in names if n.startswith(prefix) for m in [_LAYER.match(n[len(prefix) :])] if m})
    if not found or found != list(range(len(found))):
        raise ModelLoadError(f"{where}: vision tower layers are not numbered 0..n-1 (found {found[:6]})")
    return len(found)


def load_llava(ctx: LoadContext) -> VisionAdapter:
    """A LLaVA-OneVision / LLaVA-Video adapter from either checkpoint format."""
    reader = WeightReader.open(ctx.source)
    if "mm_vision_tower" in ctx.config:
        return _load_next(ctx, reader)
    return _load_transformers(ctx, reader)


def _load_transformers(ctx: LoadContext, reader: WeightReader) -> VisionAdapter:
    from transformers import SiglipVisionConfig
    from transformers.activations import ACT2FN

    config, where = ctx.config, ctx.config_path
    vision = dict(config.get("vision_config") or {})
    if vision.get("model_type", "siglip_vision_model") != "siglip_vision_model":
        raise ModelLoadError(f"{where}: vision tower '{vision.get('model_type')}' is not supported (SigLIP only)")
    vision.pop("model_type", None)
    vision_config = SiglipVisionConfig(**vision)
    positions = feature_positions(config.get("vision_feature_layer", -1), vision_config.num_hidden_layers, where)
    strategy = config.get("vision_feature_select_strategy", "full")
    if strategy != "full":
        raise ModelLoadError(
            f"{where}: vision_feature_select_strategy '{strategy}' is not supported (SigLIP has no CLS token; use 'full')"
        )
    names = reader.names
    tower_prefix = find_prefix(names, PATCH_WEIGHT, "vision_tower", where)
    proj_prefix = find_prefix(names, "linear_1.weight", "multi_modal_projector", where)
    newline_key = find_optional(names, "image_newline")
    tower_names = tower_tensor_names(names, tower_prefix, max(positions))
    proj_names = [n for n in names if n.startswith(proj_prefix) and n[len(proj_prefix) :].startswith(("linear_1.", "linear_2."))]
    tensors = reader.load(tower_names + proj_names + ([newline_key] if newline_key else []))

    tower = siglip_tower_from_tensors(
        vision_config, _strip(tensors, tower_prefix), positions, ctx.device, ctx.dtype, where
    )
    projector = MlpProjector(
        [
            _linear(tensors[proj_prefix + f"linear_{i}.weight"], tensors.get(proj_prefix + f"linear_{i}.bias"), ctx.device, ctx.dtype)
            for i in (1, 2)
        ],
        ACT2FN[config.get("projector_hidden_act", "gelu")],
    )
    name = "llava-video" if looks_like_llava_video(ctx.source.spec, str(ctx.source.root), config.get("_name_or_path")) else "llava-onevision"
    feature = (
        f"vision_feature_layer {config.get('vision_feature_layer', -1)} (hidden-state positions {list(positions)}"
        f" of {vision_config.num_hidden_layers} layers), before post_layernorm; strategy '{strategy}'"
    )
    return _adapter(ctx, reader, tower, projector, tensors.get(newline_key) if newline_key else None, name,
                    "transformers", "LlavaOnevisionForConditionalGeneration (vision side)", feature,
                    f"multi_modal_projector (linear_1, {config.get('projector_hidden_act', 'gelu')}, linear_2)",
                    vision_config.image_size)


def _load_next(ctx: LoadContext, reader: WeightReader) -> VisionAdapter:
    config, where = ctx.config, ctx.config_path
    names = reader.names
    tower_prefix = find_prefix(names, PATCH_WEIGHT, "vision_tower", where)
    layers = present_layers(names, tower_prefix, where)
    proj_type = str(config.get("mm_projector_type", "linear"))
    depth = 1 if proj_type == "linear" else (int(_MLP_GELU.match(proj_type).group(1)) if _MLP_GELU.match(proj_type) else 0)
    if depth < 1:
        raise ModelLoadError(f"{where}: mm_projector_type '{proj_type}' is not supported (linear or mlpNx_gelu)")
    proj_prefix = _next_projector_prefix(names, where)
    proj_names = [n for n in names if n.startswith(proj_prefix)]
    newline_key = find_optional(names, "image_newline")
    tensors = reader.load(tower_tensor_names(names, tower_prefix, None) + proj_names + ([newline_key] if newline_key else []))

    tower_tensors = _strip(tensors, tower_prefix)
    vision_config = _next_vision_config(tower_tensors, layers, config, where)
    tower = siglip_tower_from_tensors(vision_config, tower_tensors, (layers,), ctx.device, ctx.dtype, where)
    projector = MlpProjector(_next_projector_linears(tensors, proj_prefix, depth, ctx, where), nn.GELU())
    if projector.linears[0].in_features != vision_config.hidden_size:
        raise ModelLoadError(
            f"{where}: projector input {projector.linears[0].in_features} != vision width {vision_config.hidden_size}"
        )
    video = config.get("mm_newline_position") == "grid" or config.get("mm_spatial_pool_mode") == "average"
    feature = f"output of the last of {layers} stored tower layers (last SigLIP layer removed), before post_layernorm"
    return _adapter(ctx, reader, tower, projector, tensors.get(newline_key) if newline_key else None,
                    "llava-video" if video else "llava-onevision", "llava-next",
                    f"{config.get('architectures', ['LLaVA-NeXT'])[0]} (vision side)", feature,
                    f"mm_projector ({proj_type})", vision_config.image_size,
                    mm_vision_tower=config.get("mm_vision_tower"),
                    mm_newline_position=config.get("mm_newline_position"),
                    mm_spatial_pool_mode=config.get("mm_spatial_pool_mode"))


def _next_projector_prefix(names: Sequence[str], where: str) -> str:
    """The unique ``...mm_projector.`` prefix of the NeXT projector tensors."""
    marker = "mm_projector."
    prefixes = {n[: n.index(marker) + len(marker)] for n in names if n.startswith(marker) or "." + marker in n}
    if len(prefixes) != 1:
        raise ModelLoadError(f"{where}: expected one mm_projector, found {sorted(prefixes) or 'none'}")
    return prefixes.pop()


def _next_vision_config(tensors: Dict[str, torch.Tensor], layers: int, config: dict, where: str):
    """SigLIP vision config for a NeXT checkpoint: widths, patch, grid and depth from the tensors."""
    from transformers import SiglipVisionConfig

    patch_weight = tensors[PATCH_WEIGHT]
    hidden, patch = int(patch_weight.shape[0]), int(patch_weight.shape[-1])
    positions = int(tensors[POSITION_WEIGHT].shape[0])
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise ModelLoadError(f"{where}: {positions} position embeddings do not form a square grid")
    tower_name = str(config.get("mm_vision_tower", "")).lower()
    if "siglip" not in tower_name or "so400m" not in tower_name:
        raise ModelLoadError(
            f"{where}: mm_vision_tower '{config.get('mm_vision_tower')}' is not supported (SigLIP-so400m towers only)"
        )
    heads = NEXT_TOWER_DEFAULTS["num_attention_heads"]
    if hidden % heads:
        raise ModelLoadError(f"{where}: vision width {hidden} is not divisible by {heads} heads")
    if config.get("mm_hidden_size") not in (None, hidden):
        raise ModelLoadError(f"{where}: mm_hidden_size {config['mm_hidden_size']} != vision tower width {hidden}")
    return SiglipVisionConfig(
        hidden_size=hidden,
        intermediate_size=int(tensors["encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=layers,
        image_size=grid * patch,
        patch_size=patch,
        num_channels=int(patch_weight.shape[1]),
        vision_use_head=False,
        **NEXT_TOWER_DEFAULTS,
    )


def _next_projector_linears(
    tensors: Dict[str, torch.Tensor], prefix: str, depth: int, ctx: LoadContext, where: str
) -> List[nn.Linear]:
    """The NeXT projector's Linear layers: ``{prefix}{0,2,4..}.weight`` (or ``{prefix}weight``)."""
    if f"{prefix}weight" in tensors:
        return [_linear(tensors[f"{prefix}weight"], tensors.get(f"{prefix}bias"), ctx.device, ctx.dtype)]
    linears = []
    for i in range(depth):
        key = f"{prefix}{2 * i}.weight"
        if key not in tensors:
            raise ModelLoadError(f"{where}: projector tensor '{key}' is missing")
        linears.append(_linear(tensors[key], tensors.get(f"{prefix}{2 * i}.bias"), ctx.device, ctx.dtype))
    return linears


def _strip(tensors: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _adapter(
    ctx: LoadContext,
    reader: WeightReader,
    tower,
    projector: nn.Module,
    newline: Optional[torch.Tensor],
    family_profile: str,
    checkpoint_format: str,
    architecture: str,
    feature: str,
    projector_desc: str,
    image_size: int,
    **extra,
) -> VisionAdapter:
    spec = image_spec(ctx, square_spec(image_size), VIDEO_PROCESSOR_FILES)
    require_fixed_size(spec, image_size, ctx.config_path)
    if newline is not None:
        newline = newline.to(device=ctx.device, dtype=ctx.dtype)
    profile = select_profile(family_profile, ctx.model_cfg.profile, has_newline=newline is not None, where=ctx.source.spec)
    info = base_info(
        ctx, family_profile, checkpoint_format, architecture, feature_layer=feature, projector=projector_desc,
        weights={"shards_opened": list(dict.fromkeys(reader.opened)), "tensors_read": len(reader.read)}, **extra,
    )
    return VisionAdapter(
        tower=tower, profile=profile, spec=spec, device=ctx.device, dtype=ctx.dtype,
        batch_frames=ctx.model_cfg.batch_frames, score_layers=ctx.model_cfg.score_layers, info=info,
        projector=projector, newline=newline, tensors_read=reader.read,
    )
