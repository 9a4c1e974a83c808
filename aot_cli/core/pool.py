"""Spatial pooling of tokens and of the anchor mask (docs/method.md §4)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .budget import pooled_grid  # noqa: F401  (re-exported; torch-free, used by the planner)
from .geometry import smallest_k_mask


def pool_maps(x: torch.Tensor, grid: Sequence[int], stride: int = 2, mode: str = "bilinear") -> torch.Tensor:
    """Pool ``x [F, N, C]`` laid out on ``grid`` -> ``[F, N2, C]`` in ``x``'s dtype (as the
    models' own pooling does)."""
    Fn, N, C = x.shape
    H, W = int(grid[0]), int(grid[1])
    img = x.reshape(Fn, H, W, C).permute(0, 3, 1, 2)
    if mode == "bilinear":
        out = F.interpolate(img, size=pooled_grid(grid, stride, mode), mode="bilinear", align_corners=False)
    elif mode == "average":
        out = F.avg_pool2d(img, stride)
    else:
        raise ValueError(f"pooling mode must be 'bilinear' or 'average', got {mode!r}")
    return out.permute(0, 2, 3, 1).reshape(Fn, -1, C)


def model_tokens(tokens: torch.Tensor, grid: Sequence[int], pooling: Optional[str] = "bilinear",
                 stride: int = 2) -> torch.Tensor:
    """The model's own uncompressed tokens: ``tokens [F, H*W, D]`` pooled as the model pools
    (``pooling=None``: unchanged) -> ``[F, cells, D]``, what ``method="none"`` emits (§4, §10)."""
    return tokens if pooling is None else pool_maps(tokens, grid, stride, pooling)


def model_scores(scores: torch.Tensor, grid: Sequence[int], pooling: Optional[str] = "bilinear",
                 stride: int = 2) -> torch.Tensor:
    """A received-attention map ``[F, H*W]`` pooled like :func:`model_tokens` -> ``[F, cells]`` float32."""
    s = scores.float()
    return s if pooling is None else pool_maps(s[:, :, None], grid, stride, pooling)[:, :, 0]


def spatial_pool(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    grid: Sequence[int],
    stride: int = 2,
    mode: str = "bilinear",
    *,
    threshold: float = 0.5,
    keep_top=None,
):
    """Pool the whole token grid and the anchor mask the same way.

    Args:
        tokens: ``[F, N, D]`` (anchors already updated, non-anchors raw).
        mask: ``[F, N]`` bool anchor mask.
        grid: ``(H, W)``.
        stride: pooling factor (2 in the reference).
        mode: ``"bilinear"`` (LLaVA-OneVision) or ``"average"`` (LLaVA-Video).
        threshold: a pooled cell is kept iff its pooled mask value is ``>= threshold``.
        keep_top: instead of the threshold, keep exactly this many cells per frame (an int, or one
            int per frame): those with the largest pooled mask value, ties to the lower cell index
            (the exact-budget rule).

    Returns:
        ``(pooled [F, N2, D] in the tokens' dtype, pooled_mask [F, N2] bool, grid2)``; the pooled
        mask's float values are available from :func:`pool_maps` when needed.
    """
    grid2 = pooled_grid(grid, stride, mode)
    pooled = pool_maps(tokens, grid, stride, mode)
    weight = pool_maps(mask.float()[:, :, None], grid, stride, mode)[:, :, 0]
    if keep_top is None:
        return pooled, weight >= threshold, grid2
    return pooled, top_cells(weight, keep_top), grid2


def top_cells(weight: torch.Tensor, keep) -> torch.Tensor:
    """Mask of the ``keep[f]`` largest entries of each row of ``weight [F, N]`` (ties: lower index)."""
    Fn, N = weight.shape
    k = torch.as_tensor(keep, device=weight.device, dtype=torch.long).expand(Fn)
    if bool((k > N).any()) or bool((k < 0).any()):
        raise ValueError(f"cannot keep {k.tolist()} cells of {N}")
    return smallest_k_mask(-weight, k)
