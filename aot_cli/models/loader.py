"""``load_model(cfg)``: resolve ``--model``, recognise the family from ``config.json`` and hand
over to the family's loader."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from aot_cli.config import ModelConfig
from aot_cli.models.adapter import VisionAdapter
from aot_cli.models.clip import CLIP_TYPES, load_clip
from aot_cli.models.common import LoadContext
from aot_cli.models.dinov2 import DINOV2_TYPES, load_dinov2
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.llava import LLAVA_HF_TYPES, load_llava
from aot_cli.models.runtime import DTYPE_NAMES, resolve_device, resolve_dtype
from aot_cli.models.siglip import SIGLIP_TYPES, load_siglip
from aot_cli.models.siglip2 import SIGLIP2_TYPES, load_siglip2
from aot_cli.models.source import CONFIG_FILE, ModelSource, checkpoint_identity, resolve_source

LOADERS: Dict[str, Callable[[LoadContext], VisionAdapter]] = {
    **{t: load_siglip for t in SIGLIP_TYPES},
    **{t: load_siglip2 for t in SIGLIP2_TYPES},
    **{t: load_clip for t in CLIP_TYPES},
    **{t: load_dinov2 for t in DINOV2_TYPES},
    **{t: load_llava for t in LLAVA_HF_TYPES},
}


def family_loader(config: dict, where: str) -> Callable[[LoadContext], VisionAdapter]:
    """The loader for a parsed ``config.json``: LLaVA-NeXT when it has ``mm_vision_tower``, else
    by ``model_type``. Raises ModelLoadError naming the file for anything unsupported."""
    if "mm_vision_tower" in config:
        return load_llava
    model_type: Optional[str] = config.get("model_type")
    if model_type in LOADERS:
        return LOADERS[model_type]
    supported = ", ".join(sorted(LOADERS))
    raise ModelLoadError(
        f"{where}: model_type '{model_type}' is not supported"
        f" (supported: {supported}, or a LLaVA-NeXT config with mm_vision_tower)"
    )


def model_identity(cfg: ModelConfig, source: Optional[ModelSource] = None) -> Dict[str, Any]:
    """What decides a model's tokens beyond ``cfg`` itself, found without loading weights:
    ``checkpoint`` (:func:`~aot_cli.models.source.checkpoint_identity`), ``dtype`` (the
    resolved tower dtype name, as the loaded adapter will have it) and ``profile`` (name, pooling
    and clip length of the profile the loader will use, from :func:`~aot_cli.models.peek.peek_checkpoint`). ``source``: ``cfg.model``
    already resolved. Raises ModelLoadError for a model or device that cannot be used."""
    from aot_cli.models.peek import peek_checkpoint

    source = source or resolve_source(cfg.model, cfg.revision)
    dtype = resolve_dtype(cfg.dtype, resolve_device(cfg.device))
    profile = peek_checkpoint(source, cfg).profile
    return {"checkpoint": checkpoint_identity(source), "dtype": DTYPE_NAMES.get(dtype, str(dtype)),
            "profile": {"name": profile.name, "pooling": profile.pooling, "clip_length": profile.clip_length}}


def adapter_identity(adapter: VisionAdapter) -> Dict[str, Any]:
    """:func:`model_identity` of a loaded adapter, from its own provenance (no look-up by name):
    equal to ``model_identity(cfg)`` for the checkpoint and settings it was loaded with."""
    from pathlib import Path

    info = adapter.info
    source = ModelSource(spec=str(info.get("model")), kind=str(info.get("source")), root=Path(info["resolved_path"]),
                         repo_id=info.get("repo_id"), revision=info.get("revision"), commit=info.get("commit"))
    profile = adapter.profile
    return {"checkpoint": checkpoint_identity(source), "dtype": DTYPE_NAMES.get(adapter.dtype, str(adapter.dtype)),
            "profile": {"name": profile.name, "pooling": profile.pooling, "clip_length": profile.clip_length}}


def load_model(cfg: ModelConfig, source: Optional[ModelSource] = None) -> VisionAdapter:
    """Load the vision side of ``cfg.model`` (hub id, local directory or named model) on
    ``cfg.device`` in ``cfg.dtype``. ``source``: ``cfg.model`` already resolved
    (:func:`~aot_cli.models.source.resolve_source`). Raises ModelLoadError (one line) when it
    cannot."""
    source = source or resolve_source(cfg.model, cfg.revision)
    config = source.json(CONFIG_FILE)
    if config is None:
        raise ModelLoadError(f"{source.location(CONFIG_FILE)}: config.json is missing")
    where = source.location(CONFIG_FILE)
    loader = family_loader(config, where)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    return loader(LoadContext(source=source, config=config, model_cfg=cfg, device=device, dtype=dtype))
