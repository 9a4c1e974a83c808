"""aot: compress video-LLM visual tokens with AOT and cache them in safetensors.

Public API::

    from aot_cli import compress_video, RunConfig, TokenCache, AOTConfig
    res = compress_video("clip.mp4", RunConfig(method=AOTConfig(ratio=0.1)))
    cache = TokenCache("cache/")

The names are imported on first use (:func:`aot_cli._lazy.lazy_exports`), so ``import aot_cli``
and the
``aot`` command's help, version and ``inspect`` do not pay for torch, transformers or the models.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> (submodule, attribute)
_EXPORTS = {
    "AOTConfig": ("core", "AOTConfig"),
    "MethodConfig": ("core", "AOTConfig"),
    "compress": ("core", "compress"),
    "CacheError": ("cache", "CacheError"),
    "CachedVideo": ("cache", "CachedVideo"),
    "TokenCache": ("cache", "TokenCache"),
    "DecodeConfig": ("config", "DecodeConfig"),
    "ModelConfig": ("config", "ModelConfig"),
    "StorageConfig": ("config", "StorageConfig"),
    "RunConfig": ("pipeline.run", "RunConfig"),
    "compress_video": ("pipeline.run", "compress_video"),
}
lazy_exports(__name__, _EXPORTS)

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .cache import CacheError, CachedVideo, TokenCache  # noqa: F401
    from .config import DecodeConfig, ModelConfig, StorageConfig  # noqa: F401
    from .core import AOTConfig, compress  # noqa: F401
    from .core import AOTConfig as MethodConfig  # noqa: F401
    from .pipeline.run import RunConfig, compress_video  # noqa: F401
