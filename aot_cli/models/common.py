"""Helpers shared by the family loaders: the load context, image-spec lookup and provenance."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from aot_cli.config import ModelConfig
from aot_cli.models.errors import ModelLoadError, first_line
from aot_cli.models.preprocess import ImageSpec, spec_from_processor_config
from aot_cli.models.source import ModelSource, ensure_weight_files

PROCESSOR_FILES = ("preprocessor_config.json",)
VIDEO_PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


@dataclass
class LoadContext:
    """Everything a family loader needs: the resolved source, its parsed ``config.json``, the
    user's :class:`ModelConfig` and the resolved device / dtype."""

    source: ModelSource
    config: Dict[str, Any]
    model_cfg: ModelConfig
    device: torch.device
    dtype: torch.dtype

    @property
    def config_path(self) -> str:
        return self.source.location("config.json")


def image_spec(ctx: LoadContext, default: ImageSpec, files: Sequence[str] = PROCESSOR_FILES) -> ImageSpec:
    """The first of ``files`` present in the checkpoint, read over ``default``; ``default`` when
    the checkpoint ships none."""
    for name in files:
        data = ctx.source.json(name)
        if data is not None:
            return spec_from_processor_config(data, default, ctx.source.location(name))
    return default


def require_fixed_size(spec: ImageSpec, image_size: int, where: str) -> None:
    """Fixed-position-embedding towers need pixel values of exactly ``image_size`` square."""
    size = spec.crop if spec.crop is not None else (spec.size if spec.resize == "exact" else None)
    if size != (image_size, image_size):
        raise ModelLoadError(
            f"{where}: preprocessing yields {size or 'a variable size'} but the tower expects"
            f" {image_size}x{image_size} pixels"
        )


def base_info(ctx: LoadContext, family: str, checkpoint_format: str, architecture: str, **extra: Any) -> Dict[str, Any]:
    """Provenance fields every adapter reports."""
    source = ctx.source
    info: Dict[str, Any] = {
        "model": source.spec,
        "resolved_path": str(source.root),
        "source": source.kind,
        "repo_id": source.repo_id,
        "revision": ctx.model_cfg.revision,
        "commit": source.commit,
        "family": family,
        "checkpoint_format": checkpoint_format,
        "architecture": architecture,
    }
    info.update(extra)
    return info


def config_int(config: Dict[str, Any], key: str, where: str, default: Optional[int] = None) -> int:
    """``config[key]`` as int (``default`` when absent); ModelLoadError when missing or invalid."""
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModelLoadError(f"{where}: '{key}' must be an integer, got {value!r}")
    return value


def move(module: torch.nn.Module, ctx: LoadContext) -> torch.nn.Module:
    """``module`` on the context's device and dtype, in eval mode."""
    return module.to(device=ctx.device, dtype=ctx.dtype).eval()


def load_pretrained(ctx: LoadContext, model_class: Any, what: str, **kwargs: Any) -> torch.nn.Module:
    """``model_class.from_pretrained`` on the checkpoint, with SDPA attention, moved to the
    context's device and dtype; any failure is one ModelLoadError line naming the checkpoint
    directory and ``what`` ("the CLIP vision tower")."""
    ensure_weight_files(ctx.source)
    try:
        model = model_class.from_pretrained(str(ctx.source.root), dtype=ctx.dtype, attn_implementation="sdpa", **kwargs)
    except Exception as exc:
        from .torchvision_check import explain_import_failure

        text = f"{ctx.source.root}: cannot load {what} ({first_line(exc)})"
        raise ModelLoadError(explain_import_failure(text, exc)) from None
    return move(model, ctx)


def feature_positions(layer: Any, total_layers: int, where: str) -> Tuple[int, ...]:
    """LLaVA ``vision_feature_layer`` (int or list, indices into the tower's hidden-state list of
    ``total_layers + 1`` entries, negative from the end) as non-negative positions."""
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    positions = []
    for value in layers:
        if not isinstance(value, int) or not -(total_layers + 1) <= value <= total_layers:
            raise ModelLoadError(f"{where}: vision_feature_layer {value!r} out of range for {total_layers} layers")
        positions.append(value % (total_layers + 1))
    return tuple(positions)
