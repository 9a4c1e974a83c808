"""aot: compress video-LLM visual tokens with AOT and cache them in safetensors.

Public API::

    from aot_cli import compress_video, RunConfig, TokenCache, AOTConfig
    res = compress_video("clip.mp4", RunConfig(method=AOTConfig(ratio=0.1)))
    cache = TokenCache("cache/")

The names are imported on first use (PEP 562 module ``__getattr__``), so ``import aot_cli`` and the
``aot`` command's help, version and ``inspect`` do not pay for torch, transformers or the models.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> (module, attribute)
_EXPORTS = {
    "AOTConfig": ("aot_cli.core", "AOTConfig"),
    "MethodConfig": ("aot_cli.core", "AOTConfig"),
    "compress": ("aot_cli.core", "compress"),
    "CacheError": ("aot_cli.cache", "CacheError"),
    "CachedVideo": ("aot_cli.cache", "CachedVideo"),
    "TokenCache": ("aot_cli.cache", "TokenCache"),
    "DecodeConfig": ("aot_cli.config", "DecodeConfig"),
    "ModelConfig": ("aot_cli.config", "ModelConfig"),
    "StorageConfig": ("aot_cli.config", "StorageConfig"),
    "RunConfig": ("aot_cli.pipeline.run", "RunConfig"),
    "compress_video": ("aot_cli.pipeline.run", "compress_video"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .cache import CacheError, CachedVideo, TokenCache  # noqa: F401
    from .config import DecodeConfig, ModelConfig, StorageConfig  # noqa: F401
    from .core import AOTConfig, compress  # noqa: F401
    from .core import AOTConfig as MethodConfig  # noqa: F401
    from .pipeline.run import RunConfig, compress_video  # noqa: F401


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is asked for."""
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'aot_cli' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_EXPORTS))
