"""The whole method in one call: anchors (§2) -> intra-frame OT (§3) -> pooling (§4) ->
inter-frame OT (§5), driven by one :class:`AOTConfig` that records every parameter."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .anchors import select_anchors
from .budget import BudgetPlan, plan_budget
from .inter import KIND_KEPT, inter_frame_merge
from .intra import intra_frame_merge
from .pool import spatial_pool, top_cells
from .segments import dynamic_segments, fixed_segments


@dataclass
class AOTConfig:
    """Every parameter of the method. Two ways to size the output:

    - ``ratio`` (exact budget): keep ``round(ratio * F * cells_per_frame)`` tokens exactly; the
      planner (:mod:`aot_cli.core.budget`) chooses the anchor count and per-frame keep counts.
    - ``num_anchors`` + ``keep_ratio`` (reference rules): ``V`` anchors per frame, pooled cells kept
      by the ``>= 0.5`` threshold, non-key tokens kept by the quantile rule (data-dependent count).

    ``method="none"`` turns the method off: the model's own pooling only (identity path).
    Defaults are the released code's (LLaVA-OneVision, 32 frames); options beyond it are off.
    """

    method: str = "aot"  # "aot" | "none"
    ratio: Optional[float] = None
    num_anchors: Optional[int] = None
    keep_ratio: Optional[float] = None
    # anchors (§2)
    global_ratio: float = 0.5
    window: Optional[int] = None
    # intra-frame OT (§3)
    intra_eps: float = 0.1
    spatial_weight: float = 0.5
    nn_mix: float = 0.1
    intra_scale: float = 1.0
    intra_update: str = "reference"  # | "normalized" (docs/method.md §8.1)
    intra_stop: str = "video"  # Sinkhorn stop grouping: "video" (reference, frames stop together) | "frame"
    # pooling (§4)
    pooling: Optional[str] = "bilinear"  # | "average" | None
    stride: int = 2
    # inter-frame OT (§5) and clips (§7)
    inter: bool = True
    segments: str = "fixed"  # | "dynamic"
    clip_length: int = 4
    dynamic_c: int = 8
    dynamic_tau: float = 0.8
    inter_eps: float = 0.1
    sigma_t: float = 1.5
    inter_scale: float = 1.0
    keyframe_once: bool = False  # docs/method.md §8.3
    keep_fraction: float = 0.3  # budget planner: share of a non-key frame kept
    # Sinkhorn (§6)
    sinkhorn_max_iter: int = 100
    sinkhorn_tol: float = 1e-2
    sinkhorn_stop: str = "reference"  # | "marginal"
    log_domain: bool = False

    def validate(self) -> None:
        if self.method not in ("aot", "none"):
            raise ValueError(f"method must be 'aot' or 'none', got {self.method!r}")
        if self.pooling not in (None, "bilinear", "average"):
            raise ValueError(f"pooling must be 'bilinear', 'average' or None, got {self.pooling!r}")
        if self.segments not in ("fixed", "dynamic"):
            raise ValueError(f"segments must be 'fixed' or 'dynamic', got {self.segments!r}")
        if self.method == "none":
            return
        explicit = self.num_anchors is not None or self.keep_ratio is not None
        if self.ratio is not None and explicit:
            raise ValueError("give either ratio (exact budget) or num_anchors/keep_ratio (reference rules), not both")
        if self.ratio is None and self.num_anchors is None:
            raise ValueError("give ratio, or num_anchors (and keep_ratio when the inter-frame stage is on)")
        if self.ratio is None and self.inter and self.keep_ratio is None:
            raise ValueError("the inter-frame stage needs keep_ratio when num_anchors is given")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CompressResult:
    """Compressed tokens of one video.

    Per output token: ``tokens [T, D]``, ``frame [T]`` (source frame; keyframe for anchors),
    ``index [T]`` (cell in the output grid ``grid``), ``kind [T]`` (``KIND_*``). Per frame ``[F]``:
    ``anchors_per_frame`` (anchors on the tower grid), ``cells_per_frame`` (anchor cells kept after
    pooling), ``kept_per_frame`` (tokens the frame contributes), ``merged_per_frame`` (tokens merged
    into anchors). ``segments`` are the clips; ``plan`` the exact-budget plan when one was used;
    ``anchor_mask [F, H*W]`` and ``cell_mask [F, H2*W2]`` the anchors before and after pooling.
    """

    tokens: torch.Tensor
    frame: torch.Tensor
    index: torch.Tensor
    kind: torch.Tensor
    grid: Tuple[int, int]
    anchors_per_frame: torch.Tensor
    cells_per_frame: torch.Tensor
    kept_per_frame: torch.Tensor
    merged_per_frame: torch.Tensor
    segments: List[Tuple[int, int]]
    plan: Optional[BudgetPlan] = None
    anchor_mask: Optional[torch.Tensor] = None  # [F, H*W] anchors on the tower grid
    cell_mask: Optional[torch.Tensor] = None  # [F, H2*W2] anchor cells kept after pooling

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def make_segments(tokens: torch.Tensor, config: AOTConfig) -> List[Tuple[int, int]]:
    """Clips for ``tokens [F, N, D]``: fixed clips, or dynamic segments on mean frame features."""
    Fn = tokens.shape[0]
    if config.segments == "dynamic":
        return dynamic_segments(tokens.float().mean(1), c=config.dynamic_c, tau=config.dynamic_tau)
    return fixed_segments(Fn, config.clip_length)


def _all_tokens(x: torch.Tensor, grid: Tuple[int, int], segments, anchors_per_frame) -> CompressResult:
    Fn, N, D = x.shape
    dev = x.device
    return CompressResult(
        tokens=x.reshape(Fn * N, D),
        frame=torch.arange(Fn, device=dev).repeat_interleave(N),
        index=torch.arange(N, device=dev).repeat(Fn),
        kind=torch.full((Fn * N,), KIND_KEPT, dtype=torch.uint8, device=dev),
        grid=grid,
        anchors_per_frame=anchors_per_frame,
        cells_per_frame=torch.full((Fn,), N, dtype=torch.long, device=dev),
        kept_per_frame=torch.full((Fn,), N, dtype=torch.long, device=dev),
        merged_per_frame=torch.zeros(Fn, dtype=torch.long, device=dev),
        segments=segments,
    )


def compress(
    tokens: torch.Tensor,
    shallow: Optional[torch.Tensor],
    deep: Optional[torch.Tensor],
    grid: Sequence[int],
    config: AOTConfig,
) -> CompressResult:
    """Run the method on one video.

    Args:
        tokens: ``[F, N, D]`` tower (+ projector) tokens, ``N = H*W`` row-major.
        shallow, deep: ``[F, N]`` received-attention scores of the two score layers (unused and
            may be None when ``config.method == "none"``).
        grid: ``(H, W)``.
        config: :class:`AOTConfig`.
    """
    config.validate()
    H, W = int(grid[0]), int(grid[1])
    Fn, N, D = tokens.shape
    if N != H * W:
        raise ValueError(f"tokens have {N} cells per frame, grid {H}x{W} has {H * W}")
    zeros = torch.zeros(Fn, dtype=torch.long, device=tokens.device)
    if config.method == "none":
        if config.pooling is None:
            return _all_tokens(tokens, (H, W), [(0, Fn)], zeros)
        pooled, _, grid2 = spatial_pool(tokens, torch.zeros(Fn, N, dtype=torch.bool, device=tokens.device),
                                        (H, W), config.stride, config.pooling)
        return _all_tokens(pooled, grid2, [(0, Fn)], zeros)

    segments = make_segments(tokens, config) if config.inter else [(f, 1) for f in range(Fn)]
    plan = None
    if config.ratio is not None:
        plan = plan_budget(config.ratio, Fn, (H, W), config.pooling, config.stride,
                           segments if config.inter else None, inter=config.inter,
                           emit_keyframe=not config.keyframe_once, keep_fraction=config.keep_fraction)
        num_anchors, remainder, keep_top = plan.num_anchors, "global", plan.pooled_anchors
    else:
        num_anchors, remainder, keep_top = config.num_anchors, "drop", None

    anchor = select_anchors(shallow, deep, (H, W), num_anchors, config.global_ratio, config.window, remainder=remainder)
    merged = intra_frame_merge(
        tokens, anchor, (H, W), eps=config.intra_eps, spatial_weight=config.spatial_weight,
        nn_mix=config.nn_mix, scale=config.intra_scale, update=config.intra_update,
        max_iter=config.sinkhorn_max_iter, tol=config.sinkhorn_tol, log_domain=config.log_domain,
        stop=config.sinkhorn_stop, stop_group=config.intra_stop,
    )
    if config.pooling is not None:
        pooled, cell_mask, grid2 = spatial_pool(merged, anchor, (H, W), config.stride, config.pooling, keep_top=keep_top)
    else:
        pooled, grid2 = merged, (H, W)
        cell_mask = anchor if keep_top is None else top_cells(anchor.float(), keep_top)

    if config.inter:
        inter_kwargs = dict(eps=config.inter_eps, sigma_t=config.sigma_t, scale=config.inter_scale,
                            emit_keyframe=not config.keyframe_once, max_iter=config.sinkhorn_max_iter,
                            tol=config.sinkhorn_tol, log_domain=config.log_domain, stop=config.sinkhorn_stop)
        if plan is not None:
            res = inter_frame_merge(pooled, cell_mask, segments, keep_counts=plan.keep_counts, **inter_kwargs)
        else:
            res = inter_frame_merge(pooled, cell_mask, segments, keep_ratio=config.keep_ratio, **inter_kwargs)
    else:
        # Inter-frame stage off (the published LLaVA-Video run): every frame's kept cells, in order.
        res = inter_frame_merge(pooled, cell_mask, segments, keep_counts=[0] * Fn, emit_keyframe=False)
        res.kind = torch.full_like(res.kind, KIND_KEPT)
        res.kept_per_frame = cell_mask.sum(1)

    out = CompressResult(
        tokens=res.tokens, frame=res.frame, index=res.index, kind=res.kind, grid=grid2,
        anchors_per_frame=anchor.sum(1), cells_per_frame=cell_mask.sum(1),
        kept_per_frame=res.kept_per_frame, merged_per_frame=res.merged_per_frame,
        segments=segments, plan=plan, anchor_mask=anchor, cell_mask=cell_mask,
    )
    if plan is not None and len(out) != plan.target:
        raise RuntimeError(f"budget planner promised {plan.target} tokens, method produced {len(out)}")
    return out
