"""Running a video LLM on the inputs of :func:`aot_cli.downstream.model_inputs`: greedy (or
sampled) generation and continuation scoring, for one prompt or a left-padded batch.

Both take the model's keyword arguments as the loader returns them, so they work for every family
of :data:`aot_cli.downstream.inputs.CONSUMERS`; batching and appending a continuation use the
family's ``collate`` and ``extend``.
"""
from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import torch

from .errors import DownstreamError
from .inputs import Inputs, append_tokens, left_pad_inputs
from .llava import text_tokenizer


def _pad_id(model: Any, tokenizer: Any) -> Optional[int]:
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pad


def generate_texts(model: Any, processor_or_tokenizer: Any, inputs: Mapping[str, Any], *, max_new_tokens: int = 64,
                   generation: Optional[Mapping[str, Any]] = None) -> Tuple[List[str], List[torch.Tensor]]:
    """``model.generate(**inputs)`` for a batch of B prompts: ``(texts, new token ids)``, one of each
    per prompt, the text decoded without special tokens and stripped, the ids [N_b] without the
    padding that ends the shorter answers of a batch. Greedy unless ``generation`` (extra
    ``generate`` arguments: ``do_sample``, ``temperature``, ``top_p``, ``num_beams``) says
    otherwise. When ``inputs`` hold ``input_ids`` [B, L], ``generate`` returns the prompt too; it is
    cut off."""
    tokenizer = text_tokenizer(processor_or_tokenizer)
    extra: dict = {"do_sample": False}
    pad = _pad_id(model, tokenizer)
    if getattr(model.generation_config, "pad_token_id", None) is None and pad is not None:
        extra["pad_token_id"] = pad
    extra.update(generation or {})
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, **extra)
    ids = inputs.get("input_ids")
    new = out[:, ids.shape[-1]:] if ids is not None else out
    rows: List[torch.Tensor] = []
    for row in new:
        if new.shape[0] > 1 and pad is not None:
            keep = int((row != pad).nonzero().max()) + 1 if bool((row != pad).any()) else 0
            row = row[:keep]
        rows.append(row)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows], rows


def generate_answer(model: Any, processor_or_tokenizer: Any, inputs_embeds: torch.Tensor,
                    attention_mask: torch.Tensor, max_new_tokens: int = 64,
                    generation: Optional[Mapping[str, Any]] = None) -> Tuple[str, torch.Tensor]:
    """One prompt given as ``inputs_embeds`` [1, L, H] and ``attention_mask`` [1, L]:
    ``(decoded text, new token ids [N])`` (:func:`generate_texts`)."""
    texts, ids = generate_texts(model, processor_or_tokenizer,
                                {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask},
                                max_new_tokens=max_new_tokens, generation=generation)
    return texts[0], ids[0]


def score_continuations(model: Any, prompts: Sequence[Mapping[str, Any]], continuations: Sequence[torch.Tensor], *,
                        extend: Callable[[Any, Mapping[str, Any], torch.Tensor], Inputs] = append_tokens,
                        collate: Optional[Callable[[Sequence[Mapping[str, Any]]], Inputs]] = left_pad_inputs,
                        ) -> List[Tuple[torch.Tensor, bool]]:
    """Log-probabilities of each continuation (token ids [C_b], C_b >= 1) right after its prompt (the
    inputs of one prompt), in one forward pass: each prompt is ``extend``-ed by its continuation,
    the sequences are ``collate``-d (left padding; positions then follow the attention mask, as
    ``generate`` sets them, unless the inputs carry ``position_ids``), and the logits at the C_b
    positions before each sequence's end score its continuation. Returns, per prompt,
    ``(log-probabilities float32 [C_b] on the CPU, greedy)``, ``greedy`` True when every
    continuation token is the argmax at its position."""
    if len(prompts) != len(continuations) or not prompts:
        raise DownstreamError(f"{len(prompts)} prompts but {len(continuations)} continuations to score")
    conts = [c.reshape(-1).long() for c in continuations]
    if any(c.numel() == 0 for c in conts):
        raise DownstreamError("a continuation to score has no tokens")
    sequences = [extend(model, prompt, cont) for prompt, cont in zip(prompts, conts)]
    if len(sequences) == 1:
        batch = dict(sequences[0])
    else:
        if collate is None:
            raise DownstreamError("this family scores one continuation at a time")
        batch = collate(sequences)
        if "position_ids" not in batch:
            mask = batch["attention_mask"].long()
            batch["position_ids"] = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    logits = model(**batch).logits
    length = logits.shape[1]
    results = []
    for b, cont in enumerate(conts):
        scored = logits[b, length - 1 - cont.numel():length - 1].float().log_softmax(-1)
        target = cont.to(scored.device)
        logprobs = scored.gather(1, target.unsqueeze(1)).squeeze(1)
        results.append((logprobs.cpu(), bool((scored.argmax(-1) == target).all())))
    return results


def continuation_scores(model: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                        continuation_ids: torch.Tensor) -> Tuple[torch.Tensor, bool]:
    """Log-probabilities of ``continuation_ids`` [C] (C >= 1) following one prompt given as
    ``inputs_embeds`` [1, P, H] and ``attention_mask`` [1, P]: the logits at positions
    P-1 .. P+C-2 score tokens P .. P+C-1. Returns ``(log-probabilities float32 [C], greedy)``
    (:func:`score_continuations`)."""
    return score_continuations(model, [{"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}],
                               [continuation_ids])[0]


__all__ = ["generate_texts", "generate_answer", "score_continuations", "continuation_scores"]
