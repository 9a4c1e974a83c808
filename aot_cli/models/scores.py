"""Received-attention scores of two layers, captured while the tower runs (docs/method.md §1).

For a layer's softmax attention ``A[F, heads, T(query), T(key)]`` the score of a key token is
``sum over queries, mean over heads`` -> ``[F, T]`` float32: how much attention it receives.

The tower runs with SDPA, which never returns the attention map. Two ways to get the scores
without ever holding a ``[F, heads, T, T]`` map, both in chunks of queries (``chunk = head_dim``
by default, so a chunk ``[F, heads, chunk, T]`` has as many elements as one hidden state
``[F, T, C]``), logits in the model dtype (as eager attention), softmax and sums in float32:

1. transformers towers (attention through ``ALL_ATTENTION_FUNCTIONS``): during the scored pass,
   and for the two scored layers only, the attention module gets a copy of its config whose
   ``_attn_implementation`` is :data:`SCORED_ATTENTION`, a function registered with transformers'
   public ``AttentionInterface``. It computes the layer's attention itself, chunk by chunk, and
   sums each chunk's probabilities as it goes: the logits are computed once, for the output and
   the scores together. Every other layer, and every layer of a plain pass, runs SDPA untouched.
   Numerically the scored layers compute what transformers' eager attention computes.
2. anything else (e.g. the offline DINOv2): forward hooks keep the layer's own ``q_proj`` and
   ``k_proj`` outputs, and a forward hook on the attention module recomputes ``softmax(q k^T)``
   from them after the layer ran (when the projections were not seen, from the hook's input
   ``hidden_states`` with the module's own projections).

The config copies and hooks exist only inside :class:`ScoreCapture`; nothing is patched.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


SCORED_ATTENTION = "aot_scored_sdpa"


class _Sink:
    """Where the routed attention function leaves a layer's scores for :class:`ScoreCapture`:
    one ``[B, n]`` piece per call. A module that attends over packed sequences one segment at a
    time (the Qwen towers' ``cu_seqlens`` path calls the attention function once per frame or
    window, each ``[1, n_i]``) leaves several pieces; they are joined along the token axis in
    call order, which is the packed sequence's order."""

    def __init__(self, query_chunk: Optional[int]) -> None:
        self.query_chunk = query_chunk
        self.parts: List[torch.Tensor] = []

    def take(self) -> Optional[torch.Tensor]:
        """The scores of the call(s) since the last take, joined; None when there were none."""
        parts, self.parts = self.parts, []
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def attention_with_scores(query: torch.Tensor, key: torch.Tensor, value: Optional[torch.Tensor],
                          attention_mask: Optional[torch.Tensor], scaling: float,
                          query_chunk: Optional[int] = None) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """Softmax attention of ``query/key/value [F, heads, T, hd]`` in chunks of queries:
    ``(output [F, T, heads, hd], scores [F, T] float32)`` (the output in the layout the attention
    module reshapes, written chunk by chunk into one tensor; None when ``value`` is None, for the
    scores alone); the scores are the probabilities summed over queries and averaged over heads. ``attention_mask``: None, boolean (True = attend) or
    additive, broadcastable to ``[F, heads, T, T]``."""
    frames, heads, tokens, head_dim = query.shape
    step = max(1, int(query_chunk or head_dim))
    mask = attention_mask
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(~mask, float("-inf"))
    k_t = key.transpose(-1, -2)
    total = torch.zeros(frames, heads, key.shape[2], dtype=torch.float32, device=query.device)
    output = None
    if value is not None:
        output = torch.empty(frames, tokens, heads, value.shape[-1], dtype=value.dtype, device=value.device)
    for start in range(0, tokens, step):
        logits = torch.matmul(query[:, :, start : start + step], k_t) * scaling
        if mask is not None:
            logits = logits + (mask if mask.shape[-2] == 1 else mask[..., start : start + step, :])
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        del logits
        total += probs.sum(dim=2)
        if output is not None:
            output[:, start : start + step] = torch.matmul(probs.to(value.dtype), value).transpose(1, 2)
        del probs
    return output, total.mean(dim=1)


def received_attention(module: nn.Module, hidden: torch.Tensor, query_chunk: Optional[int] = None,
                       projections: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """Scores ``[F, T]`` float32 of the attention ``module`` for its input ``hidden`` [F, T, C]:
    ``softmax(q k^T * scale)`` summed over queries, averaged over heads; ``query_chunk`` queries
    at a time (default: head_dim). ``projections``: the module's own ``(q_proj(hidden),
    k_proj(hidden))`` when already computed; otherwise they are computed here."""
    q_proj, k_proj, heads, head_dim, scale = attention_geometry(module)
    frames, tokens, _ = hidden.shape
    q_lin, k_lin = projections if projections is not None else (q_proj(hidden), k_proj(hidden))
    q = q_lin.reshape(frames, tokens, heads, head_dim).transpose(1, 2)
    k = k_lin.reshape(frames, tokens, heads, head_dim).transpose(1, 2)
    return attention_with_scores(q, k, None, None, scale, query_chunk)[1]


def scored_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
                          scaling: Optional[float] = None, **kwargs: Any):
    """The attention function behind :data:`SCORED_ATTENTION` (transformers' attention-function
    signature). With a score sink on the module's config (set by :class:`ScoreCapture`) and a
    plain bidirectional attention it computes the attention with :func:`attention_with_scores`
    and leaves the scores in the sink; otherwise it is transformers' SDPA attention."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    sink = getattr(getattr(module, "config", None), "aot_score_sink", None)
    plain = (sink is not None and not dropout and kwargs.get("position_bias") is None
             and not kwargs.get("is_causal", getattr(module, "is_causal", False))
             and query.shape[1] == key.shape[1])
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    output, scores = attention_with_scores(query, key, value, attention_mask, scale, sink.query_chunk)
    sink.parts.append(scores)
    return output, None


def _register_scored_attention() -> bool:
    """Register :data:`SCORED_ATTENTION` with transformers (once); False without transformers."""
    try:
        from transformers import AttentionInterface
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    if SCORED_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(SCORED_ATTENTION, scored_sdpa_attention)
    return True


def _routable(module: nn.Module) -> bool:
    """Whether ``module`` picks its attention function from its config (transformers modules)."""
    config = getattr(module, "config", None)
    return config is not None and hasattr(config, "_attn_implementation") and type(module).__module__.startswith(
        "transformers.")


class ScoreCapture:
    """Context manager that records :func:`received_attention` of the given attention modules
    during one forward pass. ``scores[i]`` is ``[F, T]`` float32 for ``modules[i]`` (the same
    module listed twice is computed once)."""

    def __init__(self, modules: Sequence[nn.Module], query_chunk: Optional[int] = None) -> None:
        self.modules = list(modules)
        self.query_chunk = query_chunk
        self.scores: List[Optional[torch.Tensor]] = [None] * len(self.modules)
        self._handles: List[torch.utils.hooks.RemovableHandle] = []
        self._configs: List[Tuple[nn.Module, Any]] = []

    def __enter__(self) -> "ScoreCapture":
        slots: Dict[int, List[int]] = {}
        for i, module in enumerate(self.modules):
            slots.setdefault(id(module), []).append(i)
        routed = _register_scored_attention()
        for module in {id(m): m for m in self.modules}.values():
            sink = _Sink(self.query_chunk)
            seen: Dict[str, torch.Tensor] = {}
            if routed and _routable(module):
                config = copy.copy(module.config)
                config._attn_implementation = SCORED_ATTENTION
                config.aot_score_sink = sink
                self._configs.append((module, module.config))
                module.config = config
            else:
                q_proj, k_proj = attention_geometry(module)[:2]
                self._handles.append(q_proj.register_forward_hook(self._keep(seen, "q")))
                self._handles.append(k_proj.register_forward_hook(self._keep(seen, "k")))
            self._handles.append(
                module.register_forward_hook(self._hook(slots[id(module)], sink, seen), with_kwargs=True))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, config in self._configs:
            module.config = config
        self._configs.clear()

    @staticmethod
    def _keep(seen: Dict[str, torch.Tensor], name: str):
        def hook(proj: nn.Module, args: tuple, output: torch.Tensor) -> None:
            seen[name] = output

        return hook

    def _hook(self, positions: List[int], sink: _Sink, seen: Dict[str, torch.Tensor]):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
            scores = sink.take()  # computed by the routed attention function
            if scores is None:
                hidden = kwargs.get("hidden_states")
                if hidden is None:
                    hidden = args[0]
                q, k = seen.pop("q", None), seen.pop("k", None)
                own = (q, k) if q is not None and k is not None and q.shape[:-1] == hidden.shape[:-1] else None
                scores = received_attention(module, hidden, self.query_chunk, projections=own)
            for i in positions:
                self.scores[i] = scores

        return hook

    def result(self) -> List[torch.Tensor]:
        """The recorded scores; raises RuntimeError if a module did not run."""
        if any(s is None for s in self.scores):
            raise RuntimeError("a scored attention layer did not run during the forward pass")
        return [s for s in self.scores if s is not None]
