"""Feeding a cached video to a transformers Qwen2.5-VL / Qwen3-VL / Qwen3.5 model
(``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``,
``Qwen3_5ForConditionalGeneration``; the MoE variants alike).

    inputs = qwen_inputs(model, tokenizer, "What happens?", cache["clip.mp4"])  # what model_inputs runs
    logits = model(**inputs).logits
    out = model.generate(**inputs, max_new_tokens=64)       # prompt ids + new ids
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

What the model's processor and ``get_rope_index`` would give for the uncompressed video is built
first, then the video positions the cache dropped are taken out:

1. **Text.** The chat template renders ``[{"role": "user", "content": [{"type": "video"},
   {"type": "text", "text": question}]}]`` with a generation prompt; its video item is laid out
   as the processor lays it out (transformers 5.x ``Qwen2_5_VLProcessor`` /
   ``Qwen3VLProcessor.replace_video_token``): Qwen2.5-VL one ``<|vision_start|>`` ...
   ``<|vision_end|>`` block of ``t * (h/2) * (w/2)`` ``<|video_pad|>``; Qwen3-VL / Qwen3.5, per
   temporal patch, ``<{s:.1f} seconds><|vision_start|>`` + ``(h/2) * (w/2)`` pads +
   ``<|vision_end|>`` (the template's own wrapper around the video collapsed, as the processor
   does). ``s`` is the processor's ``_calculate_timestamps``: the frame index over the video's
   frame rate, averaged over the two frames of the patch (an odd frame count repeats the last
   index). The whole text is tokenized once, as the processor tokenizes it.
2. **Positions.** The model's own ``get_rope_index`` gives the uncompressed sequence's 3-D M-RoPE
   positions ``[3, L]``; Qwen2.5-VL spaces the temporal row by ``second_per_grid_ts *
   tokens_per_second`` with ``second_per_grid_ts = temporal_patch_size / (sampled frames * fps /
   total frames)`` (qwen-vl-utils' rule, the processor's ``sampled_fps``).
3. **Compression.** Pad ``k`` of the uncompressed run is temporal patch ``k // cells``, merged
   cell ``k % cells`` (row-major). It stays once for every cached token with that
   ``(frame, index)`` (zero, one, or — two tokens at one cell — twice, both at that cell's
   position); every text token stays. The rows of the tokens that stay are taken from the
   uncompressed positions, so every remaining token keeps its uncompressed position.
4. **Features.** The cached tokens go in through ``mm_encoder_outputs["video"].pooler_output``
   (the model's precomputed-features route; it writes them into the pad positions in order), and
   Qwen3-VL's cached ``deepstack`` rows ``[L, T, D]`` through ``deepstack_features``, so the
   model adds row ``i`` of layer ``l`` to the ``i``-th kept video position after decoder layer
   ``l``, as it does with its own DeepStack features.

``position_ids`` ``[3, 1, L]`` are returned explicitly: ``generate`` then continues every row from
the last prompt position by +1 per new token (``GenerationMixin._update_model_kwargs_for_generation``),
as FastVID's and FlashVID's Qwen code numbers new tokens after a pruned prompt (docs/consumers.md,
section 5, cites the files). No transformers class is patched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .errors import DownstreamError
from .llava import cached_parts, format_prompt, text_tokenizer

#: family (cache profile) -> the ``config.model_type`` values of its checkpoints.
QWEN_MODEL_TYPES: Dict[str, Tuple[str, ...]] = {
    "qwen2.5-vl": ("qwen2_5_vl",),
    "qwen3-vl": ("qwen3_vl", "qwen3_vl_moe"),
    "qwen3.5": ("qwen3_5", "qwen3_5_moe"),
}
QWEN_FAMILIES = tuple(QWEN_MODEL_TYPES)
#: Families whose video block is one block per temporal patch, each after its timestamp.
TIMESTAMPED = ("qwen3-vl", "qwen3.5")
#: The stored tensors a Qwen consumer reads (``deepstack`` only for Qwen3-VL), e.g. for
#: ``CacheDataset(path, names=QWEN_TENSORS + ("deepstack",))``.
QWEN_TENSORS = ("tokens", "frame", "index", "video_grid_thw", "frame_indices")

#: ``meta["model"]["vision_tower"]`` fields a cache records and the model's ``vision_config``
#: attribute each must equal (another architecture's tokens are refused even at the same width).
TOWER_FIELDS = (("depth", "depth"), ("hidden_size", "hidden_size"), ("heads", "num_heads"),
                ("patch_size", "patch_size"), ("spatial_merge_size", "spatial_merge_size"),
                ("temporal_patch_size", "temporal_patch_size"), ("out_hidden_size", "out_hidden_size"))

Inputs = Dict[str, Any]


# ------------------------------------------------------------------------------ the cached video

@dataclass
class QwenVideo:
    """What a Qwen consumer reads from one cached video.

    ``tokens`` [T, D] (LLM width), ``frame`` / ``index`` int64 [T] (temporal patch, merged cell
    row-major), ``grid`` (t, h, w) in patches before the 2x2 merge, ``deepstack`` [L, T, D] or
    None, ``frame_indices`` int64 [F] (sampled frames in the source video), ``fps`` (the video's
    average frame rate), ``total_frames`` (its frame count; None when not recorded),
    ``sampled_frames`` (frames sampled before an odd count was padded), ``family``, ``meta`` and
    ``where`` (names the video in errors)."""

    tokens: torch.Tensor
    frame: torch.Tensor
    index: torch.Tensor
    grid: Tuple[int, int, int]
    deepstack: Optional[torch.Tensor]
    frame_indices: torch.Tensor
    fps: Optional[float]
    total_frames: Optional[int]
    sampled_frames: int
    family: str
    meta: Mapping[str, Any]
    where: str


def _section(meta: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = meta.get(name)
    return value if isinstance(value, Mapping) else {}


def qwen_family_of_meta(meta: Mapping[str, Any]) -> Optional[str]:
    """The family a cached video was made by (``meta["model"]["family"]``, else the profile name)."""
    family = _section(meta, "model").get("family") or _section(meta, "profile").get("name")
    return family if isinstance(family, str) else None


def check_qwen_meta(meta: Mapping[str, Any], where: str, family: Optional[str] = None) -> str:
    """The Qwen family of a cached video, from its meta alone (before a model loads). Raises
    :class:`DownstreamError` (one line naming ``where``) when the cache was not made by a Qwen
    model's own vision side, when ``family`` is given and differs, or when the frame rate a
    prompt needs was not recorded."""
    made_by = qwen_family_of_meta(meta)
    profile = _section(meta, "profile").get("name")
    if made_by not in QWEN_MODEL_TYPES or (profile is not None and profile != made_by):
        raise DownstreamError(f"{where}: tokens come from a {made_by or 'unknown'} model"
                              f"{'' if profile in (None, made_by) else f' with the {profile} profile'}, not a Qwen "
                              "model's own vision side (compress with the Qwen checkpoint itself as --model)")
    if family is not None and made_by != family:
        raise DownstreamError(f"{where}: made by a {made_by} model, but this model reads {family} caches")
    fps = _section(meta, "video").get("fps")
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise DownstreamError(f"{where}: the cache records no frame rate for the video (meta['video']['fps'] = "
                              f"{fps!r}); the {made_by} prompt needs it")
    return made_by


def _tensor(cached_video: Any, name: str, where: str, required: bool = True) -> Optional[torch.Tensor]:
    if isinstance(cached_video, Mapping):
        value = cached_video.get(name)
    else:
        value = cached_video[name] if name in cached_video else None
    if value is None and required:
        hint = (" (a CacheDataset for Qwen caches needs names=aot_cli.downstream.qwen.QWEN_TENSORS"
                " + ('deepstack',) for Qwen3-VL)") if isinstance(cached_video, Mapping) else ""
        raise DownstreamError(f"{where}: the cached video has no {name!r} tensor, which a Qwen prompt needs{hint}")
    return value


def read_qwen_video(cached_video: Any) -> QwenVideo:
    """The :class:`QwenVideo` of a :class:`~aot_cli.cache.CachedVideo` or a ``CacheDataset``
    item (a dict with ``meta`` and the :data:`QWEN_TENSORS`). Checks the recorded family and the
    tensors' shapes against each other; raises :class:`DownstreamError` (one line)."""
    tokens, _, meta, where = cached_parts(cached_video)
    family = check_qwen_meta(meta, where)
    frame = _tensor(cached_video, "frame", where).reshape(-1).long()
    index = _tensor(cached_video, "index", where).reshape(-1).long()
    grid_t = _tensor(cached_video, "video_grid_thw", where).reshape(-1)
    frame_indices = _tensor(cached_video, "frame_indices", where).reshape(-1).long()
    deepstack = _tensor(cached_video, "deepstack", where, required=False)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise DownstreamError(f"{where}: cached tokens have shape {list(tokens.shape)}, expected [T>0, D]")
    count = int(tokens.shape[0])
    if frame.numel() != count or index.numel() != count:
        raise DownstreamError(f"{where}: {count} tokens but {frame.numel()} 'frame' and {index.numel()} 'index' "
                              "entries")
    if grid_t.numel() != 3 or bool((grid_t <= 0).any()):
        raise DownstreamError(f"{where}: 'video_grid_thw' is {grid_t.tolist()}, expected three positive sizes (t, h, w)")
    grid = tuple(int(v) for v in grid_t.tolist())
    if deepstack is not None and (deepstack.ndim != 3 or deepstack.shape[1] != count
                                  or deepstack.shape[2] != tokens.shape[1]):
        raise DownstreamError(f"{where}: 'deepstack' has shape {list(deepstack.shape)}, expected "
                              f"[layers, {count}, {tokens.shape[1]}]")
    video = _section(meta, "video")
    processor = _section(meta, "processor")
    sampled = processor.get("sampled_frames")
    if not isinstance(sampled, int) or sampled <= 0:
        sampled = int(frame_indices.numel())
    total = video.get("num_frames")
    return QwenVideo(tokens=tokens, frame=frame, index=index, grid=grid, deepstack=deepstack,
                     frame_indices=frame_indices, fps=float(video["fps"]),
                     total_frames=int(total) if isinstance(total, (int, float)) and total > 0 else None,
                     sampled_frames=int(sampled), family=family, meta=meta, where=where)


# ------------------------------------------------------------------------------ the processor's rules

def patch_timestamps(frame_indices: Sequence[int], fps: float, temporal_patch_size: int = 2) -> List[float]:
    """Seconds of each temporal patch, by the rule of transformers' ``Qwen3VLProcessor.
    _calculate_timestamps``: the sampled frame indices (an incomplete last patch filled by
    repeating the last index) over ``fps``, averaged over the first and last frame of each patch."""
    indices = [int(i) for i in frame_indices]
    if not indices:
        raise DownstreamError("no sampled frame indices to time the video's patches")
    indices += [indices[-1]] * (-len(indices) % temporal_patch_size)
    seconds = [i / fps for i in indices]
    return [(seconds[k] + seconds[k + temporal_patch_size - 1]) / 2 for k in range(0, len(seconds), temporal_patch_size)]


def second_per_grid(sampled_frames: int, fps: float, total_frames: int, temporal_patch_size: int = 2) -> float:
    """Qwen2.5-VL's ``second_per_grid_ts``: seconds per temporal patch, ``temporal_patch_size /
    sampled_fps`` with ``sampled_fps = sampled_frames * fps / total_frames`` (qwen-vl-utils;
    transformers' ``VideoMetadata.sampled_fps``)."""
    return temporal_patch_size / (sampled_frames * fps / total_frames)


def video_block(family: str, grid: Tuple[int, int, int], merge: int, video_token: str, start: str, end: str,
                timestamps: Optional[Sequence[float]] = None) -> str:
    """The text that replaces the video item for the uncompressed video (``grid`` t, h, w in
    patches): Qwen2.5-VL ``t * (h/merge) * (w/merge)`` pads (inside the template's own
    start/end); Qwen3-VL / Qwen3.5 per patch ``<{s:.1f} seconds>`` + start + pads + end."""
    t, h, w = grid
    cells = (h // merge) * (w // merge)
    if family not in TIMESTAMPED:
        return video_token * (t * cells)
    if timestamps is None or len(timestamps) != t:
        raise DownstreamError(f"{t} temporal patches but {0 if timestamps is None else len(timestamps)} timestamps")
    return "".join(f"<{s:.1f} seconds>{start}{video_token * cells}{end}" for s in timestamps)


# ------------------------------------------------------------------------------ the model

def _config(model: Any) -> Any:
    return getattr(model, "config", None)


def model_family(model: Any) -> str:
    """The Qwen family of ``model`` (from ``config.model_type``); DownstreamError otherwise."""
    model_type = getattr(_config(model), "model_type", None)
    for family, types in QWEN_MODEL_TYPES.items():
        if model_type in types:
            return family
    raise DownstreamError(f"{type(model).__name__}: model_type {model_type!r} is not a Qwen2.5-VL / Qwen3-VL / "
                          "Qwen3.5 model")


def _rope_owner(model: Any) -> Any:
    """The module that has ``get_rope_index`` (``model.model`` of a ``...ForConditionalGeneration``)."""
    for owner in (model, getattr(model, "model", None)):
        if owner is not None and callable(getattr(owner, "get_rope_index", None)):
            return owner
    raise DownstreamError(f"{type(model).__name__}: has no get_rope_index; pass the ...ForConditionalGeneration model")


def _token_text(tokenizer: Any, token_id: int, what: str) -> str:
    text = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(text, str) or tokenizer.convert_tokens_to_ids(text) != int(token_id):
        raise DownstreamError(f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}: the model's {what} id {token_id} "
                              "is not a token of this tokenizer")
    return text


def check_model_fits(model: Any, video: QwenVideo) -> None:
    """The model must be of the cache's family, as wide as the cached tokens, with the recorded
    merge size and vision tower (:data:`TOWER_FIELDS`), and take exactly the cached DeepStack
    layers; DownstreamError (one line) otherwise. Two checkpoints of one architecture (a base
    model and its fine-tune) are not told apart."""
    family = model_family(model)
    config = _config(model)
    name = str(getattr(config, "_name_or_path", "") or type(model).__name__)
    if family != video.family:
        raise DownstreamError(f"{video.where}: made by a {video.family} model, but {name} is a {family} model "
                              f"(model_type {config.model_type}); use a cache made with this model")
    hidden = int(config.text_config.hidden_size)
    if video.tokens.shape[1] != hidden:
        made = _section(video.meta, "model").get("model", "another model")
        raise DownstreamError(f"{video.where}: cached tokens are {video.tokens.shape[1]} wide but the LLM's hidden "
                              f"size is {hidden} (the cache was made with {made})")
    vision = config.vision_config
    merge = int(vision.spatial_merge_size)
    recorded = _section(video.meta, "processor").get("merge_size")
    t, h, w = video.grid
    if (recorded is not None and recorded != merge) or h % merge or w % merge:
        raise DownstreamError(f"{video.where}: video grid {list(video.grid)} (merge size {recorded}) does not fit "
                              f"{name}'s spatial merge size {merge}")
    recorded_tower = _section(_section(video.meta, "model"), "vision_tower")
    for field, attribute in TOWER_FIELDS:
        want, have = recorded_tower.get(field), getattr(vision, attribute, None)
        if want is not None and have is not None and int(want) != int(have):
            made = _section(video.meta, "model").get("model", "another checkpoint")
            raise DownstreamError(f"{video.where}: made by a vision tower with {field} {want} (of {made}), but "
                                  f"{name}'s has {have}; use a cache made with this checkpoint")
    layers = len(getattr(vision, "deepstack_visual_indexes", None) or ())
    have = 0 if video.deepstack is None else int(video.deepstack.shape[0])
    if layers != have:
        raise DownstreamError(f"{video.where}: the cache holds {have} DeepStack layers but {name} takes {layers}"
                              + (" (compress again with the current aot)" if have == 0 else ""))


# ------------------------------------------------------------------------------ layout and positions

@dataclass
class QwenLayout:
    """The uncompressed prompt: ``input_ids`` [L] as the processor would tokenize it,
    ``position_ids`` [3, L] from the model's ``get_rope_index``, ``video_slots`` [t * cells]: the
    sequence index of each video pad, patch-major then cell row-major."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    video_slots: torch.Tensor
    cells: int


def uncompressed_layout(model: Any, processor_or_tokenizer: Any, question: str, video: QwenVideo) -> QwenLayout:
    """The prompt the model's processor would build for the uncompressed video, with the model's
    own M-RoPE positions (see the module docstring, steps 1-2)."""
    config = _config(model)
    vision = config.vision_config
    merge, tps = int(vision.spatial_merge_size), int(vision.temporal_patch_size)
    tokenizer = text_tokenizer(processor_or_tokenizer)
    video_id = int(config.video_token_id)
    pad = _token_text(tokenizer, video_id, "video token")
    start = _token_text(tokenizer, config.vision_start_token_id, "vision start token")
    end = _token_text(tokenizer, config.vision_end_token_id, "vision end token")
    text, templated = format_prompt(processor_or_tokenizer, question, pad)
    t, h, w = video.grid
    timestamps = None
    if video.family in TIMESTAMPED:
        if video.frame_indices.numel() > t * tps:
            raise DownstreamError(f"{video.where}: {video.frame_indices.numel()} sampled frame indices for {t} "
                                  f"temporal patches of {tps} frames")
        timestamps = patch_timestamps(video.frame_indices.tolist(), video.fps, tps)
        if len(timestamps) != t:
            raise DownstreamError(f"{video.where}: {video.frame_indices.numel()} sampled frame indices give "
                                  f"{len(timestamps)} temporal patches, but video_grid_thw says {t}")
        wrapper = start + pad + end
        if wrapper in text:  # the processor collapses the template's wrapper: each patch has its own
            text = text.replace(wrapper, pad, 1)
    text = text.replace(pad, video_block(video.family, video.grid, merge, pad, start, end, timestamps), 1)
    ids = torch.tensor(tokenizer(text, add_special_tokens=not templated)["input_ids"], dtype=torch.long)
    cells = (h // merge) * (w // merge)
    slots = torch.nonzero(ids == video_id).flatten()
    if slots.numel() != t * cells:
        raise DownstreamError(f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}: the prompt holds {slots.numel()} "
                              f"video pads where the video needs {t * cells}; the question may not contain {pad}")
    kind = (ids == video_id).to(torch.int32)[None] * 2  # mm_token_type_ids: text 0, image 1, video 2
    extra: Dict[str, Any] = {}
    if video.family not in TIMESTAMPED:
        if video.total_frames is None:
            raise DownstreamError(f"{video.where}: the cache records no frame count for the video "
                                  "(meta['video']['num_frames']); Qwen2.5-VL positions need it")
        extra["second_per_grid_ts"] = torch.tensor(
            [second_per_grid(video.sampled_frames, video.fps, video.total_frames, tps)])
    grid = torch.tensor([list(video.grid)], dtype=torch.long)
    with torch.no_grad():
        positions, _ = _rope_owner(model).get_rope_index(ids[None], mm_token_type_ids=kind, video_grid_thw=grid,
                                                         **extra)
    return QwenLayout(input_ids=ids, position_ids=positions[:, 0].cpu(), video_slots=slots, cells=cells)


def kept_sequence(layout: QwenLayout, video: QwenVideo) -> torch.Tensor:
    """Indices into the uncompressed sequence of the tokens that remain, in order: every text
    token once, each video pad once per cached token at its (frame, cell) (module docstring,
    step 3). Cached tokens must be in sequence order (frame, then cell, non-decreasing)."""
    t = video.grid[0]
    if bool((video.frame < 0).any()) or bool((video.frame >= t).any()):
        raise DownstreamError(f"{video.where}: cached 'frame' values outside the video's {t} temporal patches")
    if bool((video.index < 0).any()) or bool((video.index >= layout.cells).any()):
        raise DownstreamError(f"{video.where}: cached 'index' values outside the merged grid's {layout.cells} cells")
    cell = video.frame * layout.cells + video.index
    if cell.numel() > 1 and bool((cell[1:] < cell[:-1]).any()):
        raise DownstreamError(f"{video.where}: cached tokens are not in sequence order (frame, then cell); "
                              "Qwen caches store them in the order the LLM reads them")
    copies = torch.ones(layout.input_ids.numel(), dtype=torch.long)
    copies[layout.video_slots] = torch.bincount(cell, minlength=layout.video_slots.numel())
    return torch.repeat_interleave(torch.arange(layout.input_ids.numel()), copies)


def encoder_outputs(video: QwenVideo, dtype: torch.dtype, device: torch.device) -> Dict[str, Any]:
    """``mm_encoder_outputs`` for the model's forward: ``{"video": output}`` whose
    ``pooler_output`` is ``(tokens [T, D],)`` and, with DeepStack, ``deepstack_features`` one
    ``(rows [T, D],)`` per layer (the layout of the model's own ``get_video_features``)."""
    tokens = video.tokens.to(device=device, dtype=dtype)
    if video.deepstack is None:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return {"video": BaseModelOutputWithPooling(pooler_output=(tokens,))}
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    rows = video.deepstack.to(device=device, dtype=dtype)
    return {"video": BaseModelOutputWithDeepstackFeatures(pooler_output=(tokens,),
                                                          deepstack_features=[(layer,) for layer in rows])}


def _model_device_dtype(model: Any, device: Optional[torch.device]) -> Tuple[torch.device, torch.dtype]:
    weight = model.get_input_embeddings().weight
    return (torch.device(device) if device is not None else weight.device), weight.dtype


def qwen_inputs(model: Any, processor_or_tokenizer: Any, question: str, cached_video: Any, *,
                device: Optional[torch.device] = None) -> Inputs:
    """Keyword arguments for ``model(**d)`` and ``model.generate(**d)`` (a batch of one):
    ``input_ids`` [1, L] int64 (text and one ``<|video_pad|>`` per cached token), ``attention_mask``
    [1, L] int64, ``position_ids`` [3, 1, L] int64 (each remaining token's position in the
    uncompressed sequence) and ``mm_encoder_outputs`` (the cached tokens, and DeepStack rows,
    in the model's dtype). ``model``: a transformers Qwen2.5-VL / Qwen3-VL / Qwen3.5
    ``...ForConditionalGeneration`` (eval mode). ``processor_or_tokenizer``: its processor or
    tokenizer (the chat template). ``cached_video``: a ``CachedVideo`` or a ``CacheDataset``
    item. ``device``: where the tensors go (default: the embedding table's device). Beam search
    (``generate(..., num_beams > 1)``) expands ``mm_encoder_outputs`` in place (transformers'
    ``_expand_multimodal_outputs``): build the inputs again before reusing them.
    Raises :class:`DownstreamError` (one line) for a cache of another family, width or DeepStack
    depth, or a prompt whose video placeholder is not exactly one."""
    video = read_qwen_video(cached_video)
    check_model_fits(model, video)
    layout = uncompressed_layout(model, processor_or_tokenizer, question, video)
    take = kept_sequence(layout, video)
    where, dtype = _model_device_dtype(model, device)
    ids = layout.input_ids[take][None]
    return {
        "input_ids": ids.to(where),
        "attention_mask": torch.ones_like(ids).to(where),
        "position_ids": layout.position_ids[:, take][:, None].to(where),
        "mm_encoder_outputs": encoder_outputs(video, dtype, where),
    }


def qwen_text_inputs(model: Any, processor_or_tokenizer: Any, prompt: str) -> Inputs:
    """A prompt without a video: one user turn through the chat template, with explicit 1-D
    positions on all three rows (a Qwen model given no positions may reuse the ``rope_deltas``
    of its previous video prompt)."""
    from .llava import build_text_input_ids

    ids = build_text_input_ids(processor_or_tokenizer, prompt)
    where, _ = _model_device_dtype(model, None)
    positions = torch.arange(ids.shape[1]).view(1, 1, -1).expand(3, 1, -1)
    return {"input_ids": ids.to(where), "attention_mask": torch.ones_like(ids).to(where),
            "position_ids": positions.contiguous().to(where)}


def extend_qwen_inputs(model: Any, inputs: Mapping[str, Any], ids: torch.Tensor) -> Inputs:
    """One prompt's inputs followed by the token ids ``ids`` [C]: appended to ``input_ids`` and
    ``attention_mask``, positions continuing from the last one by +1 per token on every row (as
    ``generate`` continues), ``mm_encoder_outputs`` unchanged."""
    prompt = inputs["input_ids"]
    new = ids.reshape(1, -1).to(device=prompt.device, dtype=prompt.dtype)
    out = dict(inputs)
    out["input_ids"] = torch.cat([prompt, new], dim=1)
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(prompt)
    out["attention_mask"] = torch.cat([mask, torch.ones_like(new, dtype=mask.dtype)], dim=1)
    positions = inputs["position_ids"]
    steps = torch.arange(1, new.shape[1] + 1, dtype=positions.dtype, device=positions.device)
    out["position_ids"] = torch.cat([positions, positions[..., -1:] + steps], dim=-1)
    return out


def collate_qwen_inputs(items: Sequence[Mapping[str, Any]], pad_token_id: int = 0) -> Inputs:
    """Several prompts' inputs (of :func:`qwen_inputs` or :func:`qwen_text_inputs`) as one batch
    padded on the left: ``input_ids`` with ``pad_token_id``, ``attention_mask`` 0 and positions 1
    in the padding (masked anyway), and the videos' features concatenated in batch order (the
    model fills the video pads row by row; a prompt without a video has none)."""
    if not items:
        raise DownstreamError("no prompts to batch")
    longest = max(int(item["input_ids"].shape[1]) for item in items)
    out: Inputs = {}
    for name, fill in (("input_ids", pad_token_id), ("attention_mask", 0), ("position_ids", 1)):
        rows = []
        for item in items:
            value = item[name]
            shape = list(value.shape)
            shape[-1] = longest - shape[-1]
            rows.append(torch.cat([value.new_full(shape, fill), value], dim=-1))
        out[name] = torch.cat(rows, dim=-2)
    videos = [item["mm_encoder_outputs"]["video"] for item in items if item.get("mm_encoder_outputs")]
    if videos:  # prompts without a video have no pads: the features of the others fill theirs in order
        if len({getattr(v, "deepstack_features", None) is None for v in videos}) > 1:
            raise DownstreamError("cannot batch videos with and without DeepStack features")
        fields: Dict[str, Any] = {"pooler_output": tuple(t for v in videos for t in v.pooler_output)}
        if getattr(videos[0], "deepstack_features", None) is not None:
            fields["deepstack_features"] = [tuple(rows for per_video in layer for rows in per_video)
                                            for layer in zip(*(v.deepstack_features for v in videos))]
        out["mm_encoder_outputs"] = {"video": type(videos[0])(**fields)}
    return out


__all__ = ["QWEN_FAMILIES", "QWEN_MODEL_TYPES", "QWEN_TENSORS", "QwenVideo", "QwenLayout", "check_qwen_meta",
           "read_qwen_video", "patch_timestamps", "second_per_grid", "video_block", "model_family",
           "check_model_fits", "uncompressed_layout", "kept_sequence", "encoder_outputs", "qwen_inputs",
           "qwen_text_inputs", "extend_qwen_inputs", "collate_qwen_inputs"]
