"""Received-attention scores of two layers, captured while the tower runs (SPEC §1).

For a layer's softmax attention ``A[F, heads, T(query), T(key)]`` the score of a key token is
``sum over queries, mean over heads`` -> ``[F, T]`` float32: how much attention it receives.

The tower runs with SDPA, which never returns the attention map, so the map is recomputed: a
forward hook (``with_kwargs=True``) on each scored layer's attention module takes the hook's
input ``hidden_states`` (the layer-normed input of the attention), recomputes ``q`` and ``k``
with the module's own ``q_proj``/``k_proj`` and reduces ``softmax(q k^T * scale)`` over the query
axis in chunks of queries, so the ``[F, heads, T, T]`` map never exists: each chunk is
``[F, heads, chunk, T]`` with ``chunk = head_dim`` by default, the same number of elements as
one hidden-state tensor ``[F, T, C]``. Logits are computed in the model dtype (as the eager
attention does), the softmax and the sums in float32. Hooks are removed when the context exits.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from aot_cli.models.errors import ModelLoadError


def resolve_layer_index(index: int, layers_run: int, what: str = "score layer") -> int:
    """``index`` as a 0-based layer position among ``layers_run`` layers (negative counts from
    the last layer that runs). Raises ModelLoadError when out of range."""
    if not -layers_run <= index < layers_run:
        raise ModelLoadError(
            f"{what} {index} is out of range for a tower that runs {layers_run} layers"
            f" (valid: {-layers_run}..{layers_run - 1})"
        )
    return index % layers_run


def attention_geometry(module: nn.Module) -> Tuple[nn.Module, nn.Module, int, int, float]:
    """``(q_proj, k_proj, heads, head_dim, scale)`` of a transformers self-attention module
    (SigLIP/SigLIP2/CLIP ``q_proj``/``k_proj`` with ``scale``, DINOv2 ``q_proj``/``k_proj`` with
    ``scaling``, or older ``query``/``key`` modules)."""
    if hasattr(module, "q_proj") and hasattr(module, "k_proj"):
        q_proj, k_proj = module.q_proj, module.k_proj
        head_dim = int(getattr(module, "head_dim"))
        heads = q_proj.out_features // head_dim
        scale = getattr(module, "scale", None) or getattr(module, "scaling", None) or head_dim ** -0.5
        return q_proj, k_proj, heads, head_dim, float(scale)
    if hasattr(module, "query") and hasattr(module, "key"):
        heads = int(module.num_attention_heads)
        head_dim = int(module.attention_head_size)
        return module.query, module.key, heads, head_dim, head_dim ** -0.5
    raise ModelLoadError(f"{type(module).__name__}: no q/k projections found to recompute attention scores")


def received_attention(module: nn.Module, hidden: torch.Tensor, query_chunk: Optional[int] = None) -> torch.Tensor:
    """Scores ``[F, T]`` float32 of the attention ``module`` for its input ``hidden`` [F, T, C]:
    ``softmax(q k^T * scale)`` summed over queries, averaged over heads; ``query_chunk`` queries
    at a time (default: head_dim)."""
    q_proj, k_proj, heads, head_dim, scale = attention_geometry(module)
    frames, tokens, _ = hidden.shape
    q = q_proj(hidden).view(frames, tokens, heads, head_dim).transpose(1, 2)
    k = k_proj(hidden).view(frames, tokens, heads, head_dim).transpose(1, 2)
    k_t = k.transpose(-1, -2)
    step = max(1, int(query_chunk or head_dim))
    total = torch.zeros(frames, heads, tokens, dtype=torch.float32, device=hidden.device)
    for start in range(0, tokens, step):
        logits = torch.matmul(q[:, :, start : start + step], k_t) * scale
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        del logits
        total += probs.sum(dim=2)
        del probs
    return total.mean(dim=1)


class ScoreCapture:
    """Context manager that records :func:`received_attention` of the given attention modules
    during one forward pass. ``scores[i]`` is ``[F, T]`` float32 for ``modules[i]`` (the same
    module listed twice is computed once)."""

    def __init__(self, modules: Sequence[nn.Module], query_chunk: Optional[int] = None) -> None:
        self.modules = list(modules)
        self.query_chunk = query_chunk
        self.scores: List[Optional[torch.Tensor]] = [None] * len(self.modules)
        self._handles: List[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "ScoreCapture":
        slots: Dict[int, List[int]] = {}
        for i, module in enumerate(self.modules):
            slots.setdefault(id(module), []).append(i)
        for module in {id(m): m for m in self.modules}.values():
            self._handles.append(module.register_forward_hook(self._hook(slots[id(module)]), with_kwargs=True))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, positions: List[int]):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
            hidden = kwargs.get("hidden_states")
            if hidden is None:
                hidden = args[0]
            scores = received_attention(module, hidden, self.query_chunk)
            for i in positions:
                self.scores[i] = scores

        return hook

    def result(self) -> List[torch.Tensor]:
        """The recorded scores; raises RuntimeError if a module did not run."""
        if any(s is None for s in self.scores):
            raise RuntimeError("a scored attention layer did not run during the forward pass")
        return [s for s in self.scores if s is not None]
