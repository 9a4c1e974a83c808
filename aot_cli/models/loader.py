"""``load_model(cfg)``: resolve ``--model``, recognise the family from ``config.json`` and hand
over to the family's loader."""
from __future__ import annotations

from typing import Callable, Dict, Optional

from aot_cli.config import ModelConfig
from aot_cli.models.adapter import VisionAdapter
from aot_cli.models.clip import CLIP_TYPES, load_clip
from aot_cli.models.common import LoadContext
from aot_cli.models.dinov2 import DINOV2_TYPES, load_dinov2
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.families import check_supported
from aot_cli.models.llava import LLAVA_HF_TYPES, load_llava
from aot_cli.models.qwen import QWEN_TYPES, load_qwen
from aot_cli.models.identity import adapter_identity, model_identity  # noqa: F401  (re-exported)
from aot_cli.models.runtime import checkpoint_dtype, resolve_device, resolve_dtype
from aot_cli.models.siglip import SIGLIP_TYPES, load_siglip
from aot_cli.models.siglip2 import SIGLIP2_TYPES, load_siglip2
from aot_cli.models.source import CONFIG_FILE, ModelSource, resolve_source

LOADERS: Dict[str, Callable[[LoadContext], VisionAdapter]] = {
    **{t: load_siglip for t in SIGLIP_TYPES},
    **{t: load_siglip2 for t in SIGLIP2_TYPES},
    **{t: load_clip for t in CLIP_TYPES},
    **{t: load_dinov2 for t in DINOV2_TYPES},
    **{t: load_llava for t in LLAVA_HF_TYPES},
    **{t: load_qwen for t in QWEN_TYPES},
}


def family_loader(config: dict, where: str) -> Callable[[LoadContext], VisionAdapter]:
    """The loader for a parsed ``config.json``: LLaVA-NeXT when it has ``mm_vision_tower``, else
    by ``model_type``. Raises ModelLoadError naming the file for anything unsupported
    (:func:`~aot_cli.models.families.check_supported`)."""
    check_supported(config, where)
    if "mm_vision_tower" in config:
        return load_llava
    return LOADERS[config["model_type"]]


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
    dtype = resolve_dtype(cfg.dtype, device, checkpoint_dtype(config))
    return loader(LoadContext(source=source, config=config, model_cfg=cfg, device=device, dtype=dtype))
