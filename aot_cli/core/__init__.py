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
from .anchors import anchor_split, select_anchors, window_bounds
from .baselines import attention_topk, pool_regions, random_prune, uniform_pool
from .budget import BudgetError, BudgetPlan, plan_budget, target_tokens
from .compress import METHODS, PRESETS, AOTConfig, compress, make_segments
from .inter import (KIND_ANCHOR, KIND_KEPT, KIND_KEYFRAME, KIND_NAMES, KIND_NEWLINE, InterFrameResult,
                    inter_frame_merge)
from .intra import intra_frame_merge
from .pool import model_scores, model_tokens, pool_maps, pooled_grid, spatial_pool, top_cells
from .quality import initial_anchors, quality_merge
from .result import CompressResult
from .segments import dynamic_segments, fixed_segments
from .sinkhorn import sinkhorn

__all__ = [
    "AOTConfig", "BudgetError", "BudgetPlan", "CompressResult", "InterFrameResult",
    "KIND_ANCHOR", "KIND_KEPT", "KIND_KEYFRAME", "KIND_NAMES", "KIND_NEWLINE", "METHODS", "PRESETS",
    "anchor_split", "attention_topk", "compress", "dynamic_segments", "fixed_segments", "initial_anchors",
    "inter_frame_merge", "intra_frame_merge", "make_segments", "model_scores", "model_tokens", "plan_budget",
    "pool_maps", "pool_regions", "pooled_grid", "quality_merge", "random_prune", "select_anchors",
    "sinkhorn", "spatial_pool", "target_tokens", "top_cells", "uniform_pool", "window_bounds",
]
