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
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from aot_cli.models.adapter import VisionAdapter
from aot_cli.models.common import (
    VIDEO_PROCESSOR_FILES, LoadContext, base_info, feature_positions, image_spec, require_fixed_size,
)
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.preprocess import square_spec
from aot_cli.models.families import LLAVA_HF_TYPES  # noqa: F401  (re-exported)
from aot_cli.models.profiles import looks_like_llava_video, select_profile
from aot_cli.models.siglip import SiglipTower, siglip_tower_from_tensors
from aot_cli.models.source import WeightReader

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
    found = set()
    for name in names:
        match = _LAYER.match(name[len(prefix) :]) if name.startswith(prefix) else None
        if match:
            found.add(int(match.group(1)))
    ordered = sorted(found)
    if not ordered or ordered != list(range(len(ordered))):
        raise ModelLoadError(f"{where}: vision tower layers are not numbered 0..n-1 (found {ordered[:6]})")
    return len(ordered)


@dataclass
class VisionSide:
    """What a format loader found: tower, projector, newline and how to describe them."""

    tower: SiglipTower
    projector: MlpProjector
    newline: Optional[torch.Tensor]
    vision_config: Any
    family_profile: str
    checkpoint_format: str
    architecture: str
    feature_layer: str
    projector_desc: str
    extra: Dict[str, Any] = field(default_factory=dict)


def load_llava(ctx: LoadContext) -> VisionAdapter:
    """A LLaVA-OneVision / LLaVA-Video adapter from either checkpoint format."""
    reader = WeightReader.open(ctx.source)
    side = _load_next(ctx, reader) if "mm_vision_tower" in ctx.config else _load_transformers(ctx, reader)
    return _adapter(ctx, reader, side)


def _optional(key: Optional[str]) -> List[str]:
    return [key] if key else []


def _load_transformers(ctx: LoadContext, reader: WeightReader) -> VisionSide:
    from transformers import SiglipVisionConfig
    from transformers.activations import ACT2FN

    config, where = ctx.config, ctx.config_path
    vision = dict(config.get("vision_config") or {})
    if vision.pop("model_type", "siglip_vision_model") != "siglip_vision_model":
        raise ModelLoadError(f"{where}: only SigLIP vision towers are supported in LLaVA checkpoints")
    vision_config = SiglipVisionConfig(**vision)
    feature_layer = config.get("vision_feature_layer", -1)
    positions = feature_positions(feature_layer, vision_config.num_hidden_layers, where)
    strategy = config.get("vision_feature_select_strategy", "full")
    if strategy != "full":
        raise ModelLoadError(
            f"{where}: vision_feature_select_strategy '{strategy}' is not supported"
            " (it drops a CLS token that SigLIP does not have; use 'full')"
        )
    names = reader.names
    tower_prefix = find_prefix(names, PATCH_WEIGHT, "vision_tower", where)
    proj_prefix = find_prefix(names, "linear_1.weight", "multi_modal_projector", where)
    proj_names = [n for n in names if n.startswith((proj_prefix + "linear_1.", proj_prefix + "linear_2."))]
    newline_key = find_optional(names, "image_newline")
    tower_names = tower_tensor_names(names, tower_prefix, max(positions))
    tensors = reader.load(tower_names + proj_names + _optional(newline_key))

    tower_tensors = _strip(tensors, tower_prefix)
    tower = siglip_tower_from_tensors(vision_config, tower_tensors, positions, ctx.device, ctx.dtype, where)
    proj = _strip(tensors, proj_prefix)
    linears = [_linear(proj[f"linear_{i}.weight"], proj.get(f"linear_{i}.bias"), ctx.device, ctx.dtype) for i in (1, 2)]
    activation = config.get("projector_hidden_act", "gelu")
    video = looks_like_llava_video(ctx.source.spec, str(ctx.source.root), config.get("_name_or_path"))
    return VisionSide(
        tower=tower,
        projector=MlpProjector(linears, ACT2FN[activation]),
        newline=tensors.get(newline_key) if newline_key else None,
        vision_config=vision_config,
        family_profile="llava-video" if video else "llava-onevision",
        checkpoint_format="transformers",
        architecture="LlavaOnevisionForConditionalGeneration (vision side)",
        feature_layer=f"vision_feature_layer {feature_layer} (hidden-state positions {list(positions)} of"
        f" {vision_config.num_hidden_layers} layers), before post_layernorm; strategy '{strategy}'",
        projector_desc=f"multi_modal_projector (linear_1, {activation}, linear_2)",
    )


def _load_next(ctx: LoadContext, reader: WeightReader) -> VisionSide:
    config, where = ctx.config, ctx.config_path
    names = reader.names
    tower_prefix = find_prefix(names, PATCH_WEIGHT, "vision_tower", where)
    layers = present_layers(names, tower_prefix, where)
    proj_type = str(config.get("mm_projector_type", "linear"))
    depth = _projector_depth(proj_type, where)
    proj_prefix = _next_projector_prefix(names, where)
    proj_names = [n for n in names if n.startswith(proj_prefix)]
    newline_key = find_optional(names, "image_newline")
    tensors = reader.load(tower_tensor_names(names, tower_prefix, None) + proj_names + _optional(newline_key))

    tower_tensors = _strip(tensors, tower_prefix)
    vision_config = _next_vision_config(tower_tensors, layers, config, where)
    tower = siglip_tower_from_tensors(vision_config, tower_tensors, (layers,), ctx.device, ctx.dtype, where)
    projector = MlpProjector(_next_projector_linears(tensors, proj_prefix, depth, ctx, where), nn.GELU())
    if projector.linears[0].in_features != vision_config.hidden_size:
        raise ModelLoadError(
            f"{where}: projector input {projector.linears[0].in_features} != vision width {vision_config.hidden_size}"
        )
    video = config.get("mm_newline_position") == "grid" or config.get("mm_spatial_pool_mode") == "average"
    return VisionSide(
        tower=tower,
        projector=projector,
        newline=tensors.get(newline_key) if newline_key else None,
        vision_config=vision_config,
        family_profile="llava-video" if video else "llava-onevision",
        checkpoint_format="llava-next",
        architecture=f"{(config.get('architectures') or ['LLaVA-NeXT'])[0]} (vision side)",
        feature_layer=f"output of the last of {layers} stored tower layers (last SigLIP layer removed),"
        " before post_layernorm",
        projector_desc=f"mm_projector ({proj_type})",
        extra={key: config.get(key) for key in ("mm_vision_tower", "mm_newline_position", "mm_spatial_pool_mode")},
    )


def _projector_depth(proj_type: str, where: str) -> int:
    """Linear layers in a NeXT projector: 1 for ``linear``, N for ``mlpNx_gelu``."""
    if proj_type == "linear":
        return 1
    match = _MLP_GELU.match(proj_type)
    if not match or int(match.group(1)) < 1:
        raise ModelLoadError(f"{where}: mm_projector_type '{proj_type}' is not supported (linear or mlpNx_gelu)")
    return int(match.group(1))


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


def _adapter(ctx: LoadContext, reader: WeightReader, side: VisionSide) -> VisionAdapter:
    """The :class:`VisionAdapter` for a loaded vision side (preprocessing from the checkpoint's
    video/image processor config, else SigLIP defaults at the tower's image size)."""
    vision_config = side.vision_config
    image_size = vision_config.image_size
    spec = image_spec(ctx, square_spec(image_size), VIDEO_PROCESSOR_FILES)
    require_fixed_size(spec, image_size, ctx.config_path)
    newline = side.newline.to(device=ctx.device, dtype=ctx.dtype) if side.newline is not None else None
    profile = select_profile(side.family_profile, ctx.model_cfg.profile, has_newline=newline is not None,
                             where=ctx.source.spec)
    info = base_info(
        ctx, side.family_profile, side.checkpoint_format, side.architecture,
        feature_layer=side.feature_layer, projector=side.projector_desc,
        weights={"shards_opened": list(dict.fromkeys(reader.opened)), "tensors_read": len(reader.read)},
        vision_tower={
            "layers_in_checkpoint": vision_config.num_hidden_layers, "hidden_size": vision_config.hidden_size,
            "intermediate_size": vision_config.intermediate_size, "heads": vision_config.num_attention_heads,
            "image_size": image_size, "patch_size": vision_config.patch_size,
            "layer_norm_eps": vision_config.layer_norm_eps,
        },
        **side.extra,
    )
    return VisionAdapter(
        tower=side.tower, profile=profile, spec=spec, device=ctx.device, dtype=ctx.dtype,
        batch_frames=ctx.model_cfg.batch_frames, score_layers=ctx.model_cfg.score_layers, info=info,
        projector=side.projector, newline=newline, tensors_read=reader.read,
    )
