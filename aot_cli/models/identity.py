"""What decides a model's tokens, found without loading weights or importing torch on a CPU
machine: the checkpoint's identity, the resolved tower dtype and the profile. The cache's
configuration fingerprint is built on it, so a rerun settles what is already cached before any
model code loads."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from aot_cli.config import ModelConfig
from aot_cli.devices import dtype_label
from aot_cli.models.peek import CheckpointPeek, peek_checkpoint
from aot_cli.models.runtime import resolved_dtype_name
from aot_cli.models.source import ModelSource, checkpoint_identity, resolve_source


def model_identity(cfg: ModelConfig, source: Optional[ModelSource] = None,
                   peeked: Optional[CheckpointPeek] = None) -> Dict[str, Any]:
    """What decides a model's tokens beyond ``cfg`` itself, found without loading weights:
    ``checkpoint`` (:func:`~aot_cli.models.source.checkpoint_identity`), ``dtype`` (the
    resolved tower dtype name, as the loaded adapter will have it) and ``profile`` (name, pooling
    and clip length of the profile the loader will use, from
    :func:`~aot_cli.models.peek.peek_checkpoint`). ``source``: ``cfg.model`` already resolved;
    ``peeked``: its peek, when the caller has it. Raises ModelLoadError for a model or device that
    cannot be used."""
    source = source or resolve_source(cfg.model, cfg.revision)
    peeked = peeked or peek_checkpoint(source, cfg)
    dtype = resolved_dtype_name(cfg.dtype, cfg.device, peeked.dtype)
    return {"checkpoint": checkpoint_identity(source), "dtype": dtype, "profile": profile_identity(peeked.profile)}


def profile_identity(profile) -> Dict[str, Any]:
    """The profile settings that change tokens: name, pooling, clip length, and the keyframe
    default where a profile changes it (absent otherwise, so earlier fingerprints stay valid)."""
    data = {"name": profile.name, "pooling": profile.pooling, "clip_length": profile.clip_length}
    if getattr(profile, "keyframe_once", False):
        data["keyframe_once"] = True
    return data


def adapter_identity(adapter) -> Dict[str, Any]:
    """:func:`model_identity` of a loaded adapter, from its own provenance (no look-up by name):
    equal to ``model_identity(cfg)`` for the checkpoint and settings it was loaded with."""
    info = adapter.info
    source = ModelSource(spec=str(info.get("model")), kind=str(info.get("source")), root=Path(info["resolved_path"]),
                         repo_id=info.get("repo_id"), revision=info.get("revision"), commit=info.get("commit"))
    return {"checkpoint": checkpoint_identity(source), "dtype": dtype_label(adapter.dtype),
            "profile": profile_identity(adapter.profile)}
