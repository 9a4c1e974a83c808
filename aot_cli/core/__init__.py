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
"""
from .anchors import anchor_split, select_anchors, window_bounds
from .budget import BudgetError, BudgetPlan, plan_budget, target_tokens
from .compress import AOTConfig, CompressResult, compress, make_segments
from .inter import (KIND_ANCHOR, KIND_KEPT, KIND_KEYFRAME, KIND_NAMES, KIND_NEWLINE, InterFrameResult,
                    inter_frame_merge)
from .intra import intra_frame_merge
from .pool import pool_maps, pooled_grid, spatial_pool, top_cells
from .segments import dynamic_segments, fixed_segments
from .sinkhorn import sinkhorn

__all__ = [
    "AOTConfig", "BudgetError", "BudgetPlan", "CompressResult", "InterFrameResult",
    "KIND_ANCHOR", "KIND_KEPT", "KIND_KEYFRAME", "KIND_NAMES", "KIND_NEWLINE",
    "anchor_split", "compress", "dynamic_segments", "fixed_segments", "inter_frame_merge",
    "intra_frame_merge", "make_segments", "plan_budget", "pool_maps", "pooled_grid", "select_anchors",
    "sinkhorn", "spatial_pool", "target_tokens", "top_cells", "window_bounds",
]
