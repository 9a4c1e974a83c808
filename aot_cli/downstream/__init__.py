"""Consumers of a token cache: the one loader from a cached video and a question to a video LLM's
inputs (:func:`model_inputs`, one consumer per LLM family), generation and continuation scoring on
those inputs, a PyTorch dataset over a cache, the ``aot ask`` command's implementation, and
benchmark evaluation from a cache (:class:`CachedVideoLLM`, which the lmms-eval plugin
``aot_cli.lmms_eval`` wraps; :class:`VideoLookup`, which cached video a path means).

Depends on the cache format (``aot_cli.cache``) and the token kinds of ``aot_cli.core``, never on
the tower adapters or decoders. See docs/consumers.md for other consumers (LLaVA-NeXT code, vLLM).

    from aot_cli.downstream import model_inputs, CacheDataset, collate_videos
"""
from .ask import Answer, ask_cached_video, load_generator, load_text_side
from .dataset import CacheDataset, collate_videos
from .errors import DownstreamError
from .evaluation import CachedVideoLLM
from .generation import continuation_scores, generate_answer, generate_texts, score_continuations
from .inputs import CONSUMERS, Consumer, model_inputs, register_consumer
from .llava import (build_input_ids, build_inputs_embeds, expand_video_placeholder, format_prompt,
                    splice_video_tokens)
from .lookup import VideoLookup

__all__ = [
    "model_inputs", "Consumer", "CONSUMERS", "register_consumer", "generate_texts", "score_continuations",
    "CacheDataset", "collate_videos", "build_inputs_embeds", "build_input_ids", "format_prompt",
    "expand_video_placeholder", "splice_video_tokens", "generate_answer", "ask_cached_video",
    "load_generator", "load_text_side", "Answer", "DownstreamError", "CachedVideoLLM", "VideoLookup",
    "continuation_scores",
]
