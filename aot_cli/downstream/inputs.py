"""One entry point from a cached video and a question to a video LLM's inputs, for every LLM family
a cache can feed.

    from aot_cli.downstream import model_inputs
    inputs = model_inputs(model, processor, "What happens?", cache["clip.mp4"])
    logits = model(**inputs).logits
    out = model.generate(**inputs, max_new_tokens=64)

:func:`model_inputs` reads the cache's family (``meta["profile"]["name"]``), checks that it came
from an LLM's own vision side (``meta["model"]["family"]`` is a family of :data:`CONSUMERS`, not a
plain tower such as SigLIP or DINOv2) and that ``model`` is a model of that family
(``model.config.model_type``), then runs the family's consumer function. Each consumer returns the
keyword arguments of ``model(**d)`` and ``model.generate(**d)`` for a batch of one: the text around
the video is what the tokenizer's (or processor's) chat template gives for
``[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]`` with
``add_generation_prompt=True``; the video positions hold the cached tokens.

A family is one :class:`Consumer` row of :data:`CONSUMERS` (see :func:`register_consumer`): the
cache profile it reads, the ``model_type`` values of its checkpoints, the transformers class that
loads the whole model, its consumer function and, optionally, how to batch and extend its inputs.
LLaVA-OneVision and LLaVA-Video (:mod:`aot_cli.downstream.llava`): ``inputs_embeds`` [1, L, H] and
``attention_mask`` [1, L] int64. Qwen2.5-VL, Qwen3-VL and Qwen3.5 (:mod:`aot_cli.downstream.qwen`,
the MoE variants alike, loaded through ``AutoModelForImageTextToText``): ``input_ids``,
``attention_mask``, ``position_ids`` [3, 1, L] (each token's position in the uncompressed prompt)
and ``mm_encoder_outputs`` (the cached tokens and Qwen3-VL's DeepStack rows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .errors import DownstreamError

#: Keyword arguments of ``model(**d)`` / ``model.generate(**d)`` for one prompt (batch of one) or a batch.
Inputs = Dict[str, Any]


def left_pad_inputs(items: Sequence[Mapping[str, Any]]) -> Inputs:
    """Stack prompts (each a dict of ``inputs_embeds`` [1, L_i, H], ``attention_mask`` [1, L_i] and
    optionally ``position_ids`` [..., 1, L_i]) into one batch padded on the left: zeros in the
    embeddings and the mask, position 1 in the padding (transformers' convention; masked anyway).
    Raises :class:`DownstreamError` for any other key (its family needs its own ``collate``)."""
    if not items:
        raise DownstreamError("no prompts to batch")
    known = ("inputs_embeds", "attention_mask", "position_ids")
    for item in items:
        other = sorted(set(item) - set(known))
        if other or "inputs_embeds" not in item or "attention_mask" not in item:
            raise DownstreamError(f"cannot batch model inputs with keys {sorted(item)}: this family answers one "
                                  "prompt at a time")
    lengths = [int(item["inputs_embeds"].shape[1]) for item in items]
    longest = max(lengths)
    out: Inputs = {}
    for name, fill in (("inputs_embeds", 0), ("attention_mask", 0), ("position_ids", 1)):
        if name not in items[0]:
            continue
        rows = []
        for item, length in zip(items, lengths):
            value = item[name]
            seq_dim = 1 if name != "position_ids" else value.ndim - 1
            shape = list(value.shape)
            shape[seq_dim] = longest - length
            rows.append(torch.cat([value.new_full(shape, fill), value], dim=seq_dim))
        out[name] = torch.cat(rows, dim=0 if name != "position_ids" else rows[0].ndim - 2)
    return out


def append_tokens(model: Any, inputs: Mapping[str, Any], ids: torch.Tensor) -> Inputs:
    """``inputs`` (one prompt) followed by the token ids ``ids`` [C]: their embeddings appended to
    ``inputs_embeds``, ones to ``attention_mask`` and, when ``position_ids`` [..., 1, L] are given,
    the positions after the last one, +1 per token (what ``generate`` does for new tokens).
    Raises :class:`DownstreamError` for inputs with other keys (the family needs its own ``extend``)."""
    other = sorted(set(inputs) - {"inputs_embeds", "attention_mask", "position_ids"})
    if other or "inputs_embeds" not in inputs:
        raise DownstreamError(f"cannot append a continuation to model inputs with keys {sorted(inputs)}")
    embedding = model.get_input_embeddings()
    embeds = inputs["inputs_embeds"]
    new = embedding(ids.reshape(1, -1).to(embedding.weight.device)).to(device=embeds.device, dtype=embeds.dtype)
    out: Inputs = {"inputs_embeds": torch.cat([embeds, new], dim=1)}
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    out["attention_mask"] = torch.cat([mask, torch.ones((1, new.shape[1]), dtype=mask.dtype, device=mask.device)], 1)
    positions = inputs.get("position_ids")
    if positions is not None:
        steps = torch.arange(1, new.shape[1] + 1, dtype=positions.dtype, device=positions.device)
        out["position_ids"] = torch.cat([positions, positions[..., -1:] + steps], dim=-1)
    return out


def text_inputs(model: Any, processor_or_tokenizer: Any, prompt: str) -> Inputs:
    """A prompt without a video: one user turn through the chat template, embedded by the model."""
    from .llava import build_text_input_ids

    ids = build_text_input_ids(processor_or_tokenizer, prompt)
    embedding = model.get_input_embeddings()
    embeds = embedding(ids.to(embedding.weight.device))
    return {"inputs_embeds": embeds, "attention_mask": torch.ones(ids.shape, dtype=torch.long, device=embeds.device)}


@dataclass(frozen=True)
class Consumer:
    """How one LLM family reads a cache.

    ``family``: the cache profile it reads (``meta["profile"]["name"]``). ``model_types``: the
    ``config.model_type`` values of the checkpoints whose LLM reads such caches. ``model_class``:
    the transformers class (its name in ``transformers``) that loads the whole model.
    ``build(model, processor_or_tokenizer, question, cached_video, **opts) -> dict``: the inputs of
    one prompt (batch of one); it runs the family's own checks (width, newline, ...).
    ``check_meta(meta, where)``: checks that need only the cache's meta (run before a model loads;
    None: none). ``text(model, processor_or_tokenizer, prompt) -> dict``: a prompt without a video.
    ``collate(list of dicts) -> dict``: a batch, padded on the left (None: one prompt at a time).
    ``extend(model, inputs, ids [C]) -> dict``: one prompt's inputs followed by token ids (used to
    score continuations)."""

    family: str
    model_types: Tuple[str, ...]
    model_class: str
    build: Callable[..., Inputs]
    check_meta: Optional[Callable[[Mapping[str, Any], str], None]] = None
    text: Callable[[Any, Any, str], Inputs] = text_inputs
    collate: Optional[Callable[[Sequence[Mapping[str, Any]]], Inputs]] = left_pad_inputs
    extend: Callable[[Any, Mapping[str, Any], torch.Tensor], Inputs] = append_tokens


#: family (cache profile name) -> its consumer. Add a family with :func:`register_consumer`.
CONSUMERS: Dict[str, Consumer] = {}


def register_consumer(consumer: Consumer) -> Consumer:
    """Add (or replace) the consumer of ``consumer.family``; returns it."""
    CONSUMERS[consumer.family] = consumer
    return consumer


def _llava_consumers() -> None:
    from .llava import LLAVA_FAMILIES, check_newline_convention, llava_inputs

    for family in LLAVA_FAMILIES:
        register_consumer(Consumer(family=family, model_types=("llava_onevision",),
                                   model_class="LlavaOnevisionForConditionalGeneration", build=llava_inputs,
                                   check_meta=check_newline_convention))


def _qwen_consumers() -> None:
    from .qwen import (QWEN_MODEL_TYPES, check_qwen_meta, collate_qwen_inputs, extend_qwen_inputs, qwen_inputs,
                       qwen_text_inputs)

    for family, model_types in QWEN_MODEL_TYPES.items():
        register_consumer(Consumer(family=family, model_types=model_types, model_class="AutoModelForImageTextToText",
                                   build=qwen_inputs, check_meta=check_qwen_meta, text=qwen_text_inputs,
                                   collate=collate_qwen_inputs, extend=extend_qwen_inputs))


_llava_consumers()
_qwen_consumers()


def supported_model_types() -> List[str]:
    """Every ``model_type`` some consumer reads, sorted."""
    return sorted({t for c in CONSUMERS.values() for t in c.model_types})


def _section(meta: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = meta.get(name)
    return value if isinstance(value, Mapping) else {}


def cache_family(meta: Mapping[str, Any]) -> Optional[str]:
    """The family a cached video was made for: ``meta["profile"]["name"]`` (None when absent)."""
    name = _section(meta, "profile").get("name")
    return name if isinstance(name, str) else None


def consumer_for_meta(meta: Mapping[str, Any], where: str, family: Optional[str] = None) -> Consumer:
    """The consumer of a cached video, from its meta alone (before any model loads). Raises
    :class:`DownstreamError` (one line naming ``where``) when the tokens come from a plain tower
    (``meta["model"]["family"]`` has no consumer: never through an LLM's projector), when no
    consumer reads its profile, when ``family`` is given and differs, or when the family's own meta
    checks fail."""
    tower = _section(meta, "model").get("family")
    profile = cache_family(meta)
    if tower not in CONSUMERS:
        raise DownstreamError(f"{where}: tokens come from a {tower or 'unknown'} tower, not an LLM's projector, so they "
                              "are not in an LLM's embedding space (compress with the video LLM's checkpoint itself "
                              "as --model)")
    if profile not in CONSUMERS:
        raise DownstreamError(f"{where}: no consumer reads caches of the {profile or 'unknown'} profile "
                              f"(supported: {', '.join(sorted(CONSUMERS))})")
    if family is not None and profile != family:
        raise DownstreamError(f"{where}: made with the {profile} profile, but this model reads {family} caches")
    consumer = CONSUMERS[profile]
    if consumer.check_meta is not None:
        consumer.check_meta(meta, where)
    return consumer


def check_model_type(consumer: Consumer, model_type: Optional[str], name: str, where: str = "the cache") -> None:
    """``model_type`` (of the model or checkpoint ``name``) must be one of the consumer's; ``where``
    names the cached video in the one-line :class:`DownstreamError`."""
    if model_type not in consumer.model_types:
        raise DownstreamError(f"{where}: made for {consumer.family} (model_type {', '.join(consumer.model_types)}), "
                              f"but {name} is a {model_type!r} model; use a cache made with that model")


def _cached_meta(cached_video: Any) -> Tuple[Mapping[str, Any], str]:
    from .llava import cached_parts

    _, _, meta, where = cached_parts(cached_video)
    return meta, where


def model_inputs(model: Any, tokenizer_or_processor: Any, question: str, cached_video: Any, **opts: Any) -> Inputs:
    """Keyword arguments for ``model(**d)`` and ``model.generate(**d)``: ``question`` about
    ``cached_video`` (a :class:`~aot_cli.cache.CachedVideo`, or a ``CacheDataset`` item with meta)
    for ``model`` (a transformers video LLM of the cache's family, in eval mode) and its tokenizer or
    processor. The text around the video comes from the chat template (a ``question`` that already
    holds the model's video placeholder is used verbatim). ``opts`` go to the family's consumer
    (``device``: where the tensors go; default the embedding table's device).

    Tensors hold a batch of one; what they are depends on the family (LLaVA-OneVision /
    LLaVA-Video: ``inputs_embeds`` [1, L, H] in the model's dtype, ``attention_mask`` [1, L]
    int64; Qwen2.5-VL / Qwen3-VL / Qwen3.5: ``input_ids`` [1, L], ``attention_mask`` [1, L],
    ``position_ids`` [3, 1, L] int64 and ``mm_encoder_outputs``, see
    :func:`aot_cli.downstream.qwen.qwen_inputs`). Raises :class:`DownstreamError` (one line) when
    the cache was made by a plain tower, by another family than ``model``'s, or by another
    checkpoint (width, newline, vision tower)."""
    meta, where = _cached_meta(cached_video)
    consumer = consumer_for_meta(meta, where)
    config = getattr(model, "config", None)
    check_model_type(consumer, getattr(config, "model_type", None),
                     str(getattr(config, "_name_or_path", "") or type(model).__name__), where)
    return consumer.build(model, tokenizer_or_processor, question, cached_video, **opts)


__all__ = ["Consumer", "CONSUMERS", "Inputs", "register_consumer", "left_pad_inputs", "append_tokens", "text_inputs", "model_inputs", "consumer_for_meta",
           "check_model_type", "cache_family", "supported_model_types"]
