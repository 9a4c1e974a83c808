"""The whole method in one call: anchors (§2) -> intra-frame OT (§3) -> pooling (§4) ->
inter-frame OT (§5), driven by one :class:`AOTConfig` that records every parameter."""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch

from .anchors import select_anchors
from .baselines import attention_topk, random_prune, uniform_pool
from .budget import plan_budget
from .config import _DEFAULTS, _REFERENCE_ONLY, METHODS, PRESETS, AOTConfig  # noqa: F401  (re-exported)
from .inter import KIND_ANCHOR, KIND_KEPT, inter_frame_merge
from .intra import intra_frame_merge
from .pool import model_scores, model_tokens, pool_maps, pooled_grid, spatial_pool, top_cells
from .quality import quality_merge
from .result import CompressResult
from .segments import dynamic_segments, fixed_segments




def make_segments(tokens: torch.Tensor, config: AOTConfig) -> List[Tuple[int, int]]:
    """Clips for ``tokens [F, N, D]``: fixed clips, or dynamic segments on mean frame features."""
    Fn = tokens.shape[0]
    if config.segments == "dynamic":
        return dynamic_segments(tokens.float().mean(1), c=config.dynamic_c, tau=config.dynamic_tau)
    return fixed_segments(Fn, config.clip_length)


def _all_tokens(x: torch.Tensor, grid: Tuple[int, int], segments, anchors_per_frame,
                carry: Optional[torch.Tensor] = None) -> CompressResult:
    Fn, N, D = x.shape
    dev = x.device
    return CompressResult(
        carry=carry.reshape(Fn * N, carry.shape[2]) if carry is not None else None,
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
    carry: Optional[torch.Tensor] = None,
) -> CompressResult:
    """Run the method on one video.

    Args:
        tokens: ``[F, N, D]`` tower (+ projector) tokens, ``N = H*W`` row-major.
        shallow, deep: ``[F, N]`` received-attention scores of the two score layers (§1). Both
            may be None for methods ``"none"``, ``"random"`` and ``"pool"``; ``"attention"`` and
            the quality preset use only ``deep``.
        grid: ``(H, W)``.
        config: :class:`AOTConfig`.
        carry: optional side features ``[F, N, C]`` of the same tokens (e.g. a model's DeepStack
            rows). No decision of any method uses them; ``CompressResult.carry [T, C]`` holds, for
            every output token, the same combination of input rows that made the token (a kept
            token's own row, a merged token's weighted combination). The tokens are exactly those
            of a call without ``carry``.
    """
    config.validate()
    H, W = int(grid[0]), int(grid[1])
    Fn, N, D = tokens.shape
    if N != H * W:
        raise ValueError(f"tokens have {N} cells per frame, grid {H}x{W} has {H * W}")
    if carry is not None and carry.shape[:2] != (Fn, N):
        raise ValueError(f"carry must be [F, N, C] with F, N = {Fn}, {N}, got {tuple(carry.shape)}")
    zeros = torch.zeros(Fn, dtype=torch.long, device=tokens.device)
    if config.method == "none":
        if config.pooling is None:
            return _all_tokens(tokens, (H, W), [(0, Fn)], zeros, carry)
        pooled, _, grid2 = spatial_pool(tokens, torch.zeros(Fn, N, dtype=torch.bool, device=tokens.device),
                                        (H, W), config.stride, config.pooling)
        return _all_tokens(pooled, grid2, [(0, Fn)], zeros, _pool_carry(carry, (H, W), config))
    if config.method != "aot" or config.preset == "quality":
        return _exact_budget_method(tokens, deep, (H, W), config, carry)

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
        stop=config.sinkhorn_stop, stop_group=config.intra_stop, carry=carry,
    )
    if carry is not None:
        merged, carry = merged
        carry = _pool_carry(carry, (H, W), config)
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
            res = inter_frame_merge(pooled, cell_mask, segments, keep_counts=plan.keep_counts, carry=carry,
                                    **inter_kwargs)
        else:
            res = inter_frame_merge(pooled, cell_mask, segments, keep_ratio=config.keep_ratio, carry=carry,
                                    **inter_kwargs)
    else:
        # Inter-frame stage off (the published LLaVA-Video run): every frame's kept cells, in order.
        res = inter_frame_merge(pooled, cell_mask, segments, keep_counts=[0] * Fn, emit_keyframe=False, carry=carry)
        res.kind = torch.full_like(res.kind, KIND_KEPT)
        res.kept_per_frame = cell_mask.sum(1)

    out = CompressResult(
        tokens=res.tokens, frame=res.frame, index=res.index, kind=res.kind, grid=grid2,
        anchors_per_frame=anchor.sum(1), cells_per_frame=cell_mask.sum(1),
        kept_per_frame=res.kept_per_frame, merged_per_frame=res.merged_per_frame,
        segments=segments, plan=plan, anchor_mask=anchor, cell_mask=cell_mask, carry=res.carry,
    )
    if plan is not None and len(out) != plan.target:
        raise RuntimeError(f"budget planner promised {plan.target} tokens, method produced {len(out)}")
    return out


def _pool_carry(carry: Optional[torch.Tensor], grid: Tuple[int, int], config: AOTConfig) -> Optional[torch.Tensor]:
    """Side features pooled as the tokens are (§4), or unchanged without pooling."""
    if carry is None or config.pooling is None:
        return carry
    return pool_maps(carry, grid, config.stride, config.pooling)


def _need_deep(deep: Optional[torch.Tensor], tokens: torch.Tensor, what: str) -> None:
    if deep is None:
        raise ValueError(f"{what} needs the deep-layer attention scores (deep), got None")
    if deep.shape != tokens.shape[:2]:
        raise ValueError(f"deep scores must be [F, N] = {tuple(tokens.shape[:2])}, got {tuple(deep.shape)}")


def _exact_budget_method(tokens: torch.Tensor, deep: Optional[torch.Tensor], grid: Tuple[int, int],
                         config: AOTConfig, carry: Optional[torch.Tensor] = None) -> CompressResult:
    """The baselines (§10.1) and the quality preset (§10.3) on the model's own tokens, with the
    per-frame budgets of ``plan_budget(..., inter=False)``. ``carry``: side features, selected or
    merged as the tokens are (the baselines' choices depend on shapes, seed and scores only, so
    running a baseline on the side features picks the same rows with the same weights)."""
    Fn = tokens.shape[0]
    dev = tokens.device
    full = model_tokens(tokens, grid, config.pooling, config.stride)
    full_c = model_tokens(carry, grid, config.pooling, config.stride) if carry is not None else None
    grid2 = pooled_grid(grid, config.stride, config.pooling) if config.pooling else tuple(grid)
    n = full.shape[1]
    quality = config.method == "aot"
    segments = make_segments(tokens, config) if quality else [(0, Fn)]
    plan = plan_budget(config.ratio, Fn, grid, config.pooling, config.stride, segments, inter=False)
    plan = dataclasses.replace(plan, num_anchors=0)
    counts = plan.pooled_anchors
    zeros = torch.zeros(Fn, dtype=torch.long, device=dev)
    if quality:
        _need_deep(deep, tokens, "the quality preset")
        res = quality_merge(full, model_scores(deep, grid, config.pooling, config.stride), grid2, segments, counts,
                            attention_share=config.attention_share, salient_share=config.salient_share,
                            salient_weight=config.salient_weight, rounds=config.merge_rounds, eps=config.merge_eps,
                            max_iter=config.sinkhorn_max_iter, tol=config.sinkhorn_tol, log_domain=config.log_domain,
                            carry=full_c)
        per_frame = torch.bincount(res.frame, minlength=Fn)
        out = CompressResult(
            tokens=res.tokens, frame=res.frame, index=res.index,
            kind=torch.full((len(res.tokens),), KIND_ANCHOR, dtype=torch.uint8, device=dev), grid=grid2,
            anchors_per_frame=res.seeds_per_frame, cells_per_frame=per_frame, kept_per_frame=per_frame,
            merged_per_frame=n - per_frame, segments=segments, plan=plan, carry=res.carry)
    else:
        if config.method == "random":
            def pick(x):
                return random_prune(x, counts, config.seed)
        elif config.method == "pool":
            def pick(x):
                return uniform_pool(x, grid2, counts)
        else:
            _need_deep(deep, tokens, "--method attention")
            scores = model_scores(deep, grid, config.pooling, config.stride)

            def pick(x):
                return attention_topk(x, scores, counts)
        kept, frame, cell = pick(full)
        per_frame = torch.as_tensor(counts, dtype=torch.long, device=dev)
        out = CompressResult(
            tokens=kept, frame=frame, index=cell, kind=torch.full((len(kept),), KIND_KEPT, dtype=torch.uint8, device=dev),
            grid=grid2, anchors_per_frame=zeros, cells_per_frame=zeros.clone(), kept_per_frame=per_frame,
            merged_per_frame=(n - per_frame) if config.method == "pool" else zeros.clone(), segments=segments, plan=plan,
            carry=pick(full_c)[0] if full_c is not None else None)
    if len(out) != plan.target:
        raise RuntimeError(f"budget planner promised {plan.target} tokens, method produced {len(out)}")
    return out
