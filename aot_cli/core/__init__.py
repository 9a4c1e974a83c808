"""The AOT method as small, pure, batched tensor functions (no model, file or I/O knowledge).

Stages, in pipeline order (see docs/method.md §0):

- :func:`select_anchors`      §2  anchors per frame from two attention-score maps
- :func:`intra_frame_merge`   §3  anchors absorb their frame's other tokens by entropic OT
- :func:`spatial_pool`        §4  stride-2 pooling of tokens and anchor mask
- :func:`inter_frame_merge`   §5  clip frames merge into the keyframe's tokens by OT
- :func:`sinkhorn`            §6  batched entropic OT (kernel and log domain)
- :func:`fixed_segments`, :func:`dynamic_segments`  §5/§7 clips
- :func:`plan_budget`         exact token budgets for ``--ratio``
- :func:`compress`            the whole chain, driven by :class:`AOTConfig`
- :func:`random_prune`, :func:`uniform_pool`, :func:`attention_topk`  §10.1 baselines
- :func:`quality_merge`       §10.3 the quality preset's merge
- :mod:`aot_cli.core.fidelity` §10.2 coverage, salient coverage, OT error (POT imported lazily)
"""
from .._lazy import lazy_exports

# public name -> the submodule defining it; imported on first use (the flag checks need only
# AOTConfig, the planner and fixed_segments, which import no torch)
_EXPORTS = {
    "anchor_split": "anchors", "select_anchors": "anchors", "window_bounds": "anchors",
    "attention_topk": "baselines", "pool_regions": "baselines", "random_prune": "baselines", "uniform_pool": "baselines",
    "BudgetError": "budget", "BudgetPlan": "budget", "plan_budget": "budget", "target_tokens": "budget", "pooled_grid": "budget",
    "METHODS": "config", "PRESETS": "config", "AOTConfig": "config",
    "compress": "compress", "make_segments": "compress",
    "KIND_ANCHOR": "inter", "KIND_KEPT": "inter", "KIND_KEYFRAME": "inter", "KIND_NAMES": "inter", "KIND_NEWLINE": "inter", "InterFrameResult": "inter", "inter_frame_merge": "inter",
    "intra_frame_merge": "intra",
    "model_scores": "pool", "model_tokens": "pool", "pool_maps": "pool", "spatial_pool": "pool", "top_cells": "pool",
    "initial_anchors": "quality", "quality_merge": "quality",
    "CompressResult": "result",
    "dynamic_segments": "segments", "fixed_segments": "segments",
    "sinkhorn": "sinkhorn",
}
lazy_exports(__name__, _EXPORTS)

__all__ = [
    "AOTConfig", "BudgetError", "BudgetPlan", "CompressResult", "InterFrameResult",
    "KIND_ANCHOR", "KIND_KEPT", "KIND_KEYFRAME", "KIND_NAMES", "KIND_NEWLINE", "METHODS", "PRESETS",
    "anchor_split", "attention_topk", "compress", "dynamic_segments", "fixed_segments", "initial_anchors",
    "inter_frame_merge", "intra_frame_merge", "make_segments", "model_scores", "model_tokens", "plan_budget",
    "pool_maps", "pool_regions", "pooled_grid", "quality_merge", "random_prune", "select_anchors",
    "sinkhorn", "spatial_pool", "target_tokens", "top_cells", "uniform_pool", "window_bounds",
]
