"""aot: compress video-LLM visual tokens with AOT and cache them in safetensors.

Public API::

    from aot_cli import compress_video, RunConfig, TokenCache, AOTConfig
    res = compress_video("clip.mp4", RunConfig(method=AOTConfig(ratio=0.1)))
    cache = TokenCache("cache/")
"""
__version__ = "0.1.0"

from .cache import CacheError, CachedVideo, TokenCache  # noqa: E402
from .config import DecodeConfig, ModelConfig, StorageConfig  # noqa: E402
from .core import AOTConfig, compress  # noqa: E402
from .pipeline.run import RunConfig, compress_video  # noqa: E402

MethodConfig = AOTConfig

__all__ = ["__version__", "AOTConfig", "MethodConfig", "CacheError", "CachedVideo", "DecodeConfig",
           "ModelConfig", "RunConfig", "StorageConfig", "TokenCache", "compress", "compress_video"]
