"""Small helpers shared by the method stages: grid positions, cosine similarity, gathers."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def grid_positions(grid: Tuple[int, int], device=None) -> torch.Tensor:
    """``[H*W, 2]`` float32 positions ``(x, y) = (j/(W-1), i/(H-1))`` in row-major order
    (an axis of one cell sits at 0)."""
    H, W = grid
    ys = torch.arange(H, device=device, dtype=torch.float32) / max(H - 1, 1)
    xs = torch.arange(W, device=device, dtype=torch.float32) / max(W - 1, 1)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched cosine similarity: ``a [B,M,D]``, ``b [B,N,D]`` -> ``[B,M,N]`` (float32)."""
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    return torch.bmm(a, b.transpose(1, 2))


def split_by_mask(mask: torch.Tensor, full_width: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row-major indices of the True entries of each row of ``mask [F,N]``, padded.

    Returns ``(idx [F,K], valid [F,K], count [F])`` with ``K = max count`` (or ``K = N`` with
    ``full_width``: shapes then never depend on the data, so results of one row can not depend on
    another row's count); padding indices are 0.
    """
    Fn, N = mask.shape
    count = mask.sum(1)
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices  # True entries first, row-major
    K = N if full_width else (int(count.max()) if Fn > 0 else 0)
    idx = order[:, :K]
    valid = torch.arange(K, device=mask.device)[None, :] < count[:, None]
    return idx.masked_fill(~valid, 0), valid, count


def smallest_k_mask(values: torch.Tensor, k: torch.Tensor, valid: torch.Tensor = None) -> torch.Tensor:
    """Mask of the ``k[row]`` smallest valid entries of each row of ``values [R, N]``.

    Ties go to the lower index (stable sort), so the result is deterministic.
    """
    v = values.float()
    if valid is not None:
        v = v.masked_fill(~valid, float("inf"))
    order = torch.sort(v, dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(v.shape[1], device=v.device).expand_as(order))
    out = rank < k[:, None]
    return out if valid is None else out & valid
