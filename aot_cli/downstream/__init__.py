"""Consumers of a token cache: a PyTorch dataset over it, splicing cached tokens into a
transformers LLaVA-OneVision / LLaVA-Video prompt, the ``aot ask`` command's implementation, and
benchmark evaluation from a cache (:class:`CachedVideoLLM`, which the lmms-eval plugin
``aot_cli.lmms_eval`` wraps; :class:`VideoLookup`, which cached video a path means).

Depends on the cache format (``aot_cli.cache``) and the token kinds of ``aot_cli.core``, never on
the tower adapters or decoders. See docs/consumers.md for other consumers (LLaVA-NeXT code, vLLM).

    from aot_cli.downstream import CacheDataset, collate_videos, build_inputs_embeds
"""
from .ask import Answer, ask_cached_video, load_llava_generator
from .dataset import CacheDataset, collate_videos
from .errors import DownstreamError
from .evaluation import CachedVideoLLM
from .llava import (build_input_ids, build_inputs_embeds, continuation_scores, expand_video_placeholder,
                    format_prompt, generate_answer, splice_video_tokens)
from .lookup import VideoLookup

__all__ = [
    "CacheDataset", "collate_videos", "build_inputs_embeds", "build_input_ids", "format_prompt",
    "expand_video_placeholder", "splice_video_tokens", "generate_answer", "ask_cached_video",
    "load_llava_generator", "Answer", "DownstreamError", "CachedVideoLLM", "VideoLookup", "continuation_scores",
]
