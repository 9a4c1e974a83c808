"""Feeding cached tokens to a transformers LLaVA-OneVision / LLaVA-Video LLM
(``LlavaOnevisionForConditionalGeneration``) as ``inputs_embeds``.

The model's own video path (transformers 5.x ``LlavaOnevisionModel.forward``) is: the processor
repeats the ``<video>`` placeholder ``frames * ceil(grid/2)**2 + 1`` times, the text is embedded
with the input embedding table, and ``get_video_features`` (tower -> projector -> 2x2 bilinear
pooling -> one ``image_newline`` appended) is written into the placeholder positions with
``masked_scatter``. Here the placeholder is repeated exactly ``len(cached.tokens)`` times (the
cached count, newlines included, never the processor's frame arithmetic) and the cached tokens
are written into those positions the same way, so with compression off the LLM receives the very
same embeddings as in the model's own forward.

    embeds, mask = build_inputs_embeds(model, processor, "What happens?", cache["clip.mp4"])
    out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=64)
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

import torch

from aot_cli.core import KIND_NEWLINE

from .errors import DownstreamError

LLAVA_FAMILIES = ("llava-onevision", "llava-video")
#: The newline convention each LLaVA profile's cache records (``meta["newline"]``).
FAMILY_NEWLINE = {"llava-onevision": "one_token", "llava-video": "grid"}
# Relative tolerance when comparing a cached newline row with the model's image_newline: the
# cache may hold bf16/fp16 copies of an fp32 parameter (bf16 keeps 8 significant bits).
NEWLINE_RTOL = 1e-2


# --------------------------------------------------------------------------- the cached video

def cached_parts(cached_video: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor], Mapping[str, Any], str]:
    """``(tokens [T, D], kind uint8 [T] or None, meta, where)`` of a cached video: an
    :class:`~aot_cli.cache.CachedVideo` or a :class:`~aot_cli.downstream.CacheDataset` item
    (a dict with ``tokens``, ``meta`` and optionally ``kind``/``id``). ``where`` names it in errors."""
    if isinstance(cached_video, Mapping):
        where = f"video {cached_video.get('id', '?')!r}"
        if "tokens" not in cached_video or "meta" not in cached_video:
            raise DownstreamError(f"{where}: a dataset item needs 'tokens' and 'meta' "
                                  "(CacheDataset(..., with_meta=True))")
        return cached_video["tokens"], cached_video.get("kind"), cached_video["meta"], where
    if not (hasattr(cached_video, "tokens") and hasattr(cached_video, "meta")):
        raise DownstreamError(f"expected a CachedVideo or a CacheDataset item, got {type(cached_video).__name__}")
    path = getattr(cached_video, "path", None)
    where = f"{path}: video {getattr(cached_video, 'id', '?')!r}" if path is not None else "cached video"
    kind = cached_video.kind if "kind" in cached_video else None
    return cached_video.tokens, kind, cached_video.meta, where


def check_llava_meta(meta: Mapping[str, Any], where: str) -> str:
    """The LLaVA family that made the cache ("llava-onevision" / "llava-video"); a cache made by a
    plain tower (SigLIP, CLIP, DINOv2 — even with a LLaVA profile borrowed for pooling) raises:
    its tokens never went through a projector, so they are not in the LLM's embedding space."""
    model = meta.get("model") if isinstance(meta.get("model"), Mapping) else {}
    profile = meta.get("profile") if isinstance(meta.get("profile"), Mapping) else {}
    family = model.get("family") or profile.get("name")
    if family not in LLAVA_FAMILIES:
        raise DownstreamError(
            f"{where}: tokens come from a {family or 'unknown'} tower, not a LLaVA model's projector, so they are "
            "not in the LLM's embedding space (compress with the LLaVA checkpoint itself as --model)")
    return str(family)


def check_newline_convention(meta: Mapping[str, Any], where: str) -> None:
    """The cache's ``meta["newline"]`` must be the one its LLaVA profile places (``one_token`` for
    llava-onevision, ``grid`` for llava-video)."""
    profile = meta.get("profile") if isinstance(meta.get("profile"), Mapping) else {}
    family = profile.get("name")
    expected = FAMILY_NEWLINE.get(family)
    if expected is not None and meta.get("newline") != expected:
        raise DownstreamError(f"{where}: records newline convention {meta.get('newline')!r}, but {family} places "
                              f"{expected!r}")


def check_token_width(tokens: torch.Tensor, hidden_size: int, meta: Mapping[str, Any], where: str) -> None:
    """Cached tokens must be [T, hidden_size] with T > 0."""
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise DownstreamError(f"{where}: cached tokens have shape {list(tokens.shape)}, expected [T>0, {hidden_size}]")
    if tokens.shape[1] != hidden_size:
        made_by = (meta.get("model") or {}).get("model", "another model") if isinstance(meta.get("model"), Mapping) else "another model"
        raise DownstreamError(f"{where}: cached tokens are {tokens.shape[1]} wide but the LLM's hidden size is "
                              f"{hidden_size} (the cache was made with {made_by})")


def check_newline_matches(tokens: torch.Tensor, kind: Optional[torch.Tensor], model: Any, where: str) -> None:
    """The cached newline rows (``kind == KIND_NEWLINE``) must equal the model's ``image_newline``
    (up to the cache's storage precision): a mismatch means the cache was made with another
    checkpoint of the same width, whose tokens this LLM was never trained on."""
    newline = getattr(getattr(model, "model", None), "image_newline", None)
    if kind is None or newline is None:
        return
    rows = tokens[kind.to(tokens.device) == KIND_NEWLINE]
    if rows.shape[0] == 0:
        return
    reference = newline.detach().float().cpu().reshape(1, -1)
    diff = (rows.float().cpu() - reference).abs().max().item()
    scale = reference.abs().max().item()
    if diff > NEWLINE_RTOL * scale + 1e-6:
        raise DownstreamError(f"{where}: the cached newline differs from this model's image_newline "
                              f"(max diff {diff:.3g}); the cache was made with another checkpoint")


# ------------------------------------------------------------------------------ the prompt

def text_tokenizer(processor_or_tokenizer: Any) -> Any:
    """The tokenizer of a processor (its ``.tokenizer``), or the argument itself."""
    return getattr(processor_or_tokenizer, "tokenizer", None) or processor_or_tokenizer


def video_token_id(model: Any) -> int:
    """The model's video placeholder id (``config.video_token_id``)."""
    value = getattr(model.config, "video_token_id", None)
    if value is None:
        value = getattr(model.config, "video_token_index", None)
    if value is None:
        raise DownstreamError(f"{getattr(model, 'name_or_path', 'model')}: config has no video_token_id; "
                              "not a LLaVA-OneVision / LLaVA-Video model")
    return int(value)


def video_token_text(processor_or_tokenizer: Any, token_id: int) -> str:
    """The placeholder's text (e.g. ``<video>``) for ``token_id``; a processor's ``video_token``
    must agree with it."""
    tokenizer = text_tokenizer(processor_or_tokenizer)
    text = tokenizer.convert_ids_to_tokens(token_id)
    name = getattr(tokenizer, "name_or_path", "tokenizer")
    if not isinstance(text, str) or tokenizer.convert_tokens_to_ids(text) != token_id:
        raise DownstreamError(f"{name}: the model's video token id {token_id} is not a token of this tokenizer")
    declared = getattr(processor_or_tokenizer, "video_token", None)
    if isinstance(declared, str) and declared != text:
        raise DownstreamError(f"{name}: the processor's video token {declared!r} is not the model's "
                              f"video token {text!r} (id {token_id})")
    return text


def format_prompt(processor_or_tokenizer: Any, question: str, video_token: str) -> Tuple[str, bool]:
    """``(text, templated)``: the prompt with exactly one ``video_token``.

    A ``question`` that already holds the video token is used verbatim (``templated`` False: the
    tokenizer then adds its special tokens, as ``processor(text=...)`` would). Otherwise a user
    turn ``[video, text]`` goes through the chat template (the processor's first, then the
    tokenizer's, with a generation prompt); a tokenizer template that only takes string contents
    gets ``"<video>\\nquestion"``. No chat template at all raises."""
    if video_token in question:
        return question, False
    tokenizer = text_tokenizer(processor_or_tokenizer)
    name = getattr(tokenizer, "name_or_path", "tokenizer")
    turn = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    if getattr(processor_or_tokenizer, "tokenizer", None) is not None and getattr(processor_or_tokenizer, "chat_template", None):
        text = processor_or_tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    elif getattr(tokenizer, "chat_template", None):
        text = _render_with_tokenizer(tokenizer, turn, question, video_token)
    else:
        raise DownstreamError(f"{name}: no chat template (aot_cli.downstream.load_text_side(checkpoint) also reads "
                              f"chat_template.json / chat_template.jinja); or write the prompt yourself with one "
                              f"{video_token} in it")
    if not isinstance(text, str) or text.count(video_token) != 1:
        count = text.count(video_token) if isinstance(text, str) else 0
        raise DownstreamError(f"{name}: the chat template produced {count} {video_token} placeholders, expected "
                              f"one; write the prompt yourself with one {video_token} in it")
    return text, True


def _render_with_tokenizer(tokenizer: Any, turn: list, question: str, video_token: str) -> str:
    """A tokenizer chat template: structured contents first, then a plain-string user turn."""
    try:
        text = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        if isinstance(text, str) and text.count(video_token) == 1:
            return text
    except Exception:  # noqa: BLE001 - a string-only template may fail on list contents
        pass
    plain = [{"role": "user", "content": f"{video_token}\n{question}"}]
    return tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)


def expand_video_placeholder(input_ids: torch.Tensor, token_id: int, count: int, where: str = "prompt") -> torch.Tensor:
    """``input_ids`` [1, L] with its single ``token_id`` repeated ``count`` times → [1, L - 1 + count]."""
    ids = input_ids.reshape(-1)
    positions = torch.nonzero(ids == token_id).flatten()
    if positions.numel() != 1:
        raise DownstreamError(f"{where}: the tokenized prompt holds {positions.numel()} video placeholders "
                              f"(id {token_id}), expected exactly one")
    p = int(positions[0])
    filler = torch.full((count,), token_id, dtype=ids.dtype, device=ids.device)
    return torch.cat([ids[:p], filler, ids[p + 1:]]).unsqueeze(0)


def build_input_ids(model: Any, processor_or_tokenizer: Any, prompt: str, num_video_tokens: int) -> torch.Tensor:
    """The prompt's token ids [1, L] with ``num_video_tokens`` video placeholder positions."""
    token_id = video_token_id(model)
    video_token = video_token_text(processor_or_tokenizer, token_id)
    text, templated = format_prompt(processor_or_tokenizer, prompt, video_token)
    tokenizer = text_tokenizer(processor_or_tokenizer)
    ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    where = getattr(tokenizer, "name_or_path", "tokenizer")
    return expand_video_placeholder(torch.tensor([ids], dtype=torch.long), token_id, num_video_tokens, where)


# ------------------------------------------------------------------------------- splicing

def splice_video_tokens(model: Any, input_ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Embed ``input_ids`` [1, L] with the model's input embeddings and write ``tokens`` [T, H]
    (cast to the embedding dtype/device) into the T video placeholder positions, in order, as the
    model's own ``masked_scatter`` does. Returns [1, L, H]."""
    embedding = model.get_input_embeddings()
    ids = input_ids.to(embedding.weight.device)
    embeds = embedding(ids)
    mask = (ids == video_token_id(model)).unsqueeze(-1)
    count = int(mask.sum())
    if count != tokens.shape[0]:
        raise DownstreamError(f"prompt has {count} video positions but {tokens.shape[0]} cached tokens")
    features = tokens.to(device=embeds.device, dtype=embeds.dtype)
    return embeds.masked_scatter(mask.expand_as(embeds), features)


def build_inputs_embeds(model: Any, processor_or_tokenizer: Any, prompt: str, cached_video: Any, *,
                        device: Optional[torch.device] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(inputs_embeds [1, L, H], attention_mask [1, L] int64)`` for ``model.generate`` /
    ``model(...)``: ``prompt`` in the chat template with the video placeholder expanded to
    ``len(cached_video.tokens)`` positions, text embedded by the model, cached tokens spliced in.

    ``model``: a transformers ``LlavaOnevisionForConditionalGeneration`` (LLaVA-OneVision or
    LLaVA-Video). ``processor_or_tokenizer``: its processor or tokenizer. ``cached_video``: a
    ``CachedVideo`` or a ``CacheDataset`` item. ``device``: where the result goes (default: the
    embedding table's device). Raises :class:`DownstreamError` when the cache was not made with a
    LLaVA model's vision side, its width differs from the LLM's, or its newline is not this
    model's ``image_newline``."""
    tokens = checked_tokens(model, cached_video)
    input_ids = build_input_ids(model, processor_or_tokenizer, prompt, int(tokens.shape[0]))
    embeds = splice_video_tokens(model, input_ids, tokens)
    mask = torch.ones(input_ids.shape, dtype=torch.long, device=embeds.device)
    if device is not None:
        embeds, mask = embeds.to(device), mask.to(device)
    return embeds, mask


def llava_inputs(model: Any, processor_or_tokenizer: Any, question: str, cached_video: Any, *,
                 device: Optional[torch.device] = None) -> dict:
    """The LLaVA-OneVision / LLaVA-Video consumer of :func:`aot_cli.downstream.model_inputs`:
    ``{"inputs_embeds": [1, L, H], "attention_mask": [1, L] int64}`` from :func:`build_inputs_embeds`."""
    embeds, mask = build_inputs_embeds(model, processor_or_tokenizer, question, cached_video, device=device)
    return {"inputs_embeds": embeds, "attention_mask": mask}


def checked_tokens(model: Any, cached_video: Any) -> torch.Tensor:
    """The cached tokens [T, H] of ``cached_video`` after the checks of :func:`build_inputs_embeds`
    (LLaVA family, width = the LLM's hidden size, newline rows = the model's ``image_newline``)."""
    tokens, kind, meta, where = cached_parts(cached_video)
    check_llava_meta(meta, where)
    check_newline_convention(meta, where)
    check_token_width(tokens, int(model.get_input_embeddings().embedding_dim), meta, where)
    check_newline_matches(tokens, kind, model, where)
    return tokens


def build_text_input_ids(processor_or_tokenizer: Any, prompt: str) -> torch.Tensor:
    """Token ids [1, L] of a prompt without a video: one user turn through the chat template
    (with a generation prompt), or the bare prompt with the tokenizer's special tokens when
    there is no template."""
    tokenizer = text_tokenizer(processor_or_tokenizer)
    turn = [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    return torch.tensor([ids], dtype=torch.long)
