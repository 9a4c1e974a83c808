"""The run's configuration (:class:`RunConfig`, by concern) and what follows from it before any
model loads: the method a model profile resolves it to and the configuration fingerprint that
decides whether a cached video can be reused. No torch here, so a rerun with nothing to do never
imports it."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from ..config import DECODE_RUN_ONLY_FIELDS, DecodeConfig, ModelConfig, StorageConfig, to_dict
from ..core.config import AOTConfig


@dataclass
class RunConfig:
    """Everything that determines a cache entry, by concern."""

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: AOTConfig = field(default_factory=lambda: AOTConfig(ratio=0.1))
    storage: StorageConfig = field(default_factory=StorageConfig)
    # method fields left to the model profile when the user does not set them
    auto_pooling: bool = True
    auto_clip_length: bool = True
    auto_keyframe_once: bool = True

    def to_dict(self) -> dict:
        return to_dict(self)


def resolve_method(cfg: RunConfig, profile) -> AOTConfig:
    """The concrete method configuration for a model profile (pooling, clip length and, for
    profiles that change it, the keyframe rule from the profile unless the user set them)."""
    m = cfg.method
    if cfg.auto_pooling:
        m = dataclasses.replace(m, pooling=profile.pooling)
    if cfg.auto_clip_length:
        m = dataclasses.replace(m, clip_length=profile.clip_length)
    if cfg.auto_keyframe_once and getattr(profile, "keyframe_once", False) and _reference_chain(m):
        m = dataclasses.replace(m, keyframe_once=True)
    m.validate()
    return m


def _reference_chain(method: AOTConfig) -> bool:
    """Whether ``method`` runs the reference chain (the only one with a keyframe rule)."""
    return method.method == "aot" and method.preset == "reference"


def profile_method(cfg: RunConfig, profile: dict) -> AOTConfig:
    """``cfg.method`` with what ``profile`` (a model identity's ``{"name", "pooling",
    "clip_length", "keyframe_once", ...}``) decides filled in where the user left it to the profile:
    pooling, clip length, and (reference chain only) whether a keyframe is emitted once. No
    validation (see :func:`resolve_method` for a loaded profile)."""
    method = cfg.method
    if cfg.auto_pooling and "pooling" in profile:
        method = dataclasses.replace(method, pooling=profile["pooling"])
    if cfg.auto_clip_length and "clip_length" in profile:
        method = dataclasses.replace(method, clip_length=profile["clip_length"])
    if cfg.auto_keyframe_once and profile.get("keyframe_once") and _reference_chain(method):
        method = dataclasses.replace(method, keyframe_once=True)
    return method


#: Version of what :func:`config_fingerprint` covers; a change recomputes every cached video once.
#: 4: frames decoded with the stream's colour tags and at display aspect (issue 18).
#: 5: the decode size (``--decode-size``; Qwen-family frames decoded at native size by default).
FINGERPRINT_FORMAT = 5


def config_fingerprint(cfg: RunConfig, model_identity: dict) -> str:
    """Hash of every setting that changes a video's cached tokens, computable before the model
    loads: the decode, model (not device or batch size) and stored-dtype settings, the method
    settings with the pooling and clip length the profile decides filled in (so a configuration
    that names them explicitly, such as a cache's recorded one fed back, hashes the same as one
    that leaves them to the profile), and ``model_identity`` instead of the ``--model`` path or id
    (:func:`aot_cli.models.loader.model_identity`: what the checkpoint is, the resolved tower
    dtype and the profile). 16 lowercase hex digits."""
    method = profile_method(cfg, model_identity.get("profile") or {})
    # where the checkpoint lies and how it was named do not matter, what it is does (identity)
    # nor how the dtype was asked for (auto or by name): the identity holds the resolved one
    model = {k: v for k, v in to_dict(cfg.model).items()
             if k not in ("device", "batch_frames", "model", "revision", "dtype")}
    payload = {"decode": to_dict(cfg.decode), "model": model, "identity": model_identity,
               "method": to_dict(method), "save_dtype": cfg.storage.save_dtype, "format": FINGERPRINT_FORMAT}
    for name in DECODE_RUN_ONLY_FIELDS:  # limits, logging and time budget never change the frames
        payload["decode"].pop(name, None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
