"""Intra-frame OT merge (docs/method.md §3): each frame's anchors absorb context from its non-anchor tokens."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from .geometry import cosine, grid_positions, split_by_mask
from .sinkhorn import sinkhorn


def intra_frame_merge(
    tokens: torch.Tensor,
    anchor_mask: torch.Tensor,
    grid: Sequence[int],
    eps: float = 0.1,
    spatial_weight: float = 0.5,
    nn_mix: float = 0.1,
    scale: float = 1.0,
    *,
    update: str = "reference",
    max_iter: int = 100,
    tol: float = 1e-2,
    log_domain: bool = False,
    stop: str = "reference",
    stop_group: str = "video",
    carry: Optional[torch.Tensor] = None,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Update the anchor rows of every frame; non-anchor rows are returned unchanged.

    Args:
        tokens: ``[F, N, D]``.
        anchor_mask: ``[F, N]`` bool with the same number ``V`` of anchors in every frame.
        grid: ``(H, W)`` with ``H*W = N``.
        eps: Sinkhorn regularisation.
        spatial_weight: weight of the Euclidean position distance in the cost.
        nn_mix: share of the nearest-neighbour update in the final anchor.
        scale: ``s`` in the OT and nearest-neighbour updates.
        update: ``"reference"`` — ``(a + s*agg) / (1 + s*load)`` as released (the plan's column
            mass is ``1/V``, so the anchor barely moves, docs/method.md §8.1); ``"normalized"`` — the
            barycentre variant ``(a + s*agg/load) / (1 + s)``, where the transported sources weigh
            as much as ``s`` anchors.
        max_iter, tol, log_domain, stop: Sinkhorn options.
        stop_group: all frames are solved in one batched Sinkhorn call. ``"video"`` (reference):
            the stopping test averages over all frames and they stop together, so one frame's
            content can change how many iterations every frame gets. ``"frame"``: each frame stops
            on its own, which makes frames fully independent of each other.
        carry: optional side features ``[F, N, C]`` of the same tokens (e.g. a model's DeepStack
            rows). They take no part in any decision (costs, plans, nearest anchors all come from
            ``tokens``); each anchor row of ``carry`` is updated with exactly the weights that
            update the anchor's token.

    Returns:
        ``[F, N, D]`` in the dtype of ``tokens`` (the arithmetic runs in float32); with ``carry``,
        ``(tokens, carried [F, N, C] in carry's dtype)``.
    """
    if stop_group not in ("video", "frame"):
        raise ValueError(f"stop_group must be 'video' or 'frame', got {stop_group!r}")
    if update not in ("reference", "normalized"):
        raise ValueError(f"update must be 'reference' or 'normalized', got {update!r}")
    Fn, N, D = tokens.shape
    H, W = int(grid[0]), int(grid[1])
    if H * W != N or anchor_mask.shape != (Fn, N):
        raise ValueError(f"tokens [F,N,D]={tuple(tokens.shape)} and anchor_mask {tuple(anchor_mask.shape)} do not match grid {H}x{W}")
    counts = anchor_mask.sum(1)
    if carry is not None and carry.shape[:2] != (Fn, N):
        raise ValueError(f"carry must be [F, N, C] with F, N = {Fn}, {N}, got {tuple(carry.shape)}")

    def unchanged():
        return tokens.clone() if carry is None else (tokens.clone(), carry.clone())

    if Fn == 0:
        return unchanged()
    V = int(counts[0])
    if bool((counts != V).any()):
        raise ValueError("intra_frame_merge needs the same number of anchors in every frame")
    if V == 0 or V == N:
        return unchanged()
    device = tokens.device
    x = tokens.float()
    a_idx, _, _ = split_by_mask(anchor_mask)  # [F,V]
    u_idx, _, _ = split_by_mask(~anchor_mask)  # [F,M]
    a = torch.gather(x, 1, a_idx[:, :, None].expand(-1, -1, D))
    u = torch.gather(x, 1, u_idx[:, :, None].expand(-1, -1, D))

    pos = grid_positions((H, W), device=device)
    pa, pu = pos[a_idx], pos[u_idx]  # [F,V,2], [F,M,2]
    cos_ua = cosine(u, a)  # [F,M,V]
    dist = torch.cdist(pu, pa)  # Euclidean, not squared
    cost = (1.0 - cos_ua) + spatial_weight * dist

    plan = sinkhorn(cost, eps=eps, max_iter=max_iter, tol=tol, log_domain=log_domain, batch_stop="joint" if stop_group == "video" else "per_problem", stop=stop)
    load = plan.sum(1)  # [F,V]
    nearest = cos_ua.argmax(dim=2)  # [F,M]
    onehot = torch.nn.functional.one_hot(nearest, V).float()  # [F,M,V]
    nn_count = onehot.sum(1)
    s = scale

    def merged_anchors(a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The updated anchor rows from anchor rows ``a [F,V,*]`` and source rows ``u [F,M,*]``
        (the same weights for tokens and carried features)."""
        agg = torch.bmm(plan.transpose(1, 2), u)  # [F,V,*]
        if update == "reference":
            a_ot = (a + s * agg) / (1.0 + s * load)[:, :, None]
        else:
            bary = agg / load.clamp_min(torch.finfo(torch.float32).tiny)[:, :, None]
            a_ot = (a + s * bary) / (1.0 + s)
        nn_sum = torch.bmm(onehot.transpose(1, 2), u)
        a_nn = (s * a + nn_sum) / (s + nn_count)[:, :, None]
        return nn_mix * a_nn + (1.0 - nn_mix) * a_ot

    a_new = merged_anchors(a, u)
    out = x.clone()
    out.scatter_(1, a_idx[:, :, None].expand(-1, -1, D), a_new)
    if carry is None:
        return out.to(tokens.dtype)
    c = carry.float()
    C = c.shape[2]
    c_a = torch.gather(c, 1, a_idx[:, :, None].expand(-1, -1, C))
    c_u = torch.gather(c, 1, u_idx[:, :, None].expand(-1, -1, C))
    carried = c.clone()
    carried.scatter_(1, a_idx[:, :, None].expand(-1, -1, C), merged_anchors(c_a, c_u))
    return out.to(tokens.dtype), carried.to(carry.dtype)
