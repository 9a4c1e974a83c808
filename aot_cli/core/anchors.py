"""Anchor selection per frame (docs/method.md §2): local anchors by window from the shallow attention map,
global anchors over the whole grid from the deep map."""
from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import torch


def window_bounds(size: int, window: Optional[int]) -> List[int]:
    """Band boundaries along one grid axis.

    ``window=None``: three bands, boundaries ``round(i * size / 3)`` for i = 0..3 — on a 27-cell
    axis that is 0, 9, 18, 27 (the reference's 9-wide windows); on axes that 3 does not divide the
    bands differ in width by at most one cell (16 -> 5, 6, 5) and still cover the whole axis.
    ``window=w``: bands of ``w`` cells from the start; the last band keeps the remainder
    (27 with w=8 -> 8, 8, 8, 3).
    """
    if size < 1:
        raise ValueError(f"grid axis must have at least one cell, got {size}")
    if window is None:
        bands = min(3, size)
        return sorted({int(round(i * size / bands)) for i in range(bands + 1)})
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return list(range(0, size, window)) + [size]


@lru_cache(maxsize=64)
def _window_table(grid: Tuple[int, int], window: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``cells [num_windows, max_cells]`` (flat row-major cell ids, padded with 0) and
    ``valid [num_windows, max_cells]``."""
    H, W = grid
    rows, cols = window_bounds(H, window), window_bounds(W, window)
    groups = []
    for r0, r1 in zip(rows[:-1], rows[1:]):
        for c0, c1 in zip(cols[:-1], cols[1:]):
            ii, jj = torch.meshgrid(torch.arange(r0, r1), torch.arange(c0, c1), indexing="ij")
            groups.append((ii * W + jj).reshape(-1))
    width = max(len(g) for g in groups)
    cells = torch.zeros(len(groups), width, dtype=torch.long)
    valid = torch.zeros(len(groups), width, dtype=torch.bool)
    for k, g in enumerate(groups):
        cells[k, : len(g)] = g
        valid[k, : len(g)] = True
    return cells, valid


def window_sizes(grid: Tuple[int, int], window: Optional[int] = None) -> List[int]:
    """Number of cells in each window, in window order."""
    _, valid = _window_table(tuple(grid), window)
    return valid.sum(1).tolist()


def anchor_split(
    num_anchors: int,
    global_ratio: float,
    grid: Tuple[int, int],
    window: Optional[int] = None,
    remainder: str = "drop",
) -> Tuple[int, int, int]:
    """``(k, local_total, global_count)`` for a budget of ``num_anchors`` anchors per frame.

    ``local = int(V * (1 - g))``, ``k = local // windows`` per window (remainder dropped, as the
    reference does), ``global = V - local``. A window smaller than ``k`` gives all of its cells, so
    ``local_total = sum(min(k, |window|))``. The frame gets ``local_total + global`` anchors.
    ``remainder="global"`` (used by the exact-budget planner) gives the local remainder to the
    global anchors instead, so that exactly ``V`` anchors are chosen.
    """
    if remainder not in ("drop", "global"):
        raise ValueError(f"remainder must be 'drop' or 'global', got {remainder!r}")
    H, W = grid
    N = H * W
    if not 0 <= num_anchors <= N:
        raise ValueError(f"num_anchors must be in [0, {N}] for a {H}x{W} grid, got {num_anchors}")
    if not 0.0 <= global_ratio <= 1.0:
        raise ValueError(f"global_ratio must be in [0, 1], got {global_ratio}")
    sizes = window_sizes(grid, window)
    local = int(num_anchors * (1 - global_ratio))
    k = local // len(sizes)
    local_total = sum(min(k, s) for s in sizes)
    global_count = num_anchors - (local if remainder == "drop" else local_total)
    global_count = min(global_count, N - local_total)
    return k, local_total, global_count


def select_anchors(
    shallow: torch.Tensor,
    deep: torch.Tensor,
    grid: Sequence[int],
    num_anchors: int,
    global_ratio: float = 0.5,
    window: Optional[int] = None,
    *,
    remainder: str = "drop",
    return_parts: bool = False,
):
    """Choose anchors per frame.

    Args:
        shallow, deep: ``[F, N]`` received-attention scores (docs/method.md §1), ``N = H*W`` row-major.
        grid: ``(H, W)``.
        num_anchors: the budget ``V``.
        global_ratio: share ``g`` of global anchors.
        window: window side in cells; ``None`` splits the grid into 3x3 windows
            (see :func:`window_bounds`).
        remainder: ``"drop"`` (reference) or ``"global"``, see :func:`anchor_split`.

    Returns:
        ``anchor [F, N]`` bool with exactly ``local_total + global`` True entries per frame
        (see :func:`anchor_split`); with ``return_parts`` also the local mask.
    """
    H, W = int(grid[0]), int(grid[1])
    if shallow.shape != deep.shape or shallow.dim() != 2 or shallow.shape[1] != H * W:
        raise ValueError(
            f"shallow/deep must both be [F, {H * W}] for grid {H}x{W}, got {tuple(shallow.shape)} and {tuple(deep.shape)}"
        )
    F_, N = shallow.shape
    device = shallow.device
    k, _, global_count = anchor_split(num_anchors, global_ratio, (H, W), window, remainder)
    cells, valid = _window_table((H, W), window)
    cells, valid = cells.to(device), valid.to(device)

    local = torch.zeros(F_, N, dtype=torch.bool, device=device)
    if k > 0:
        s = shallow.float()[:, cells]  # [F, windows, width]
        s = s.masked_fill(~valid, float("-inf"))
        kk = min(k, cells.shape[1])
        top = s.topk(kk, dim=2).indices  # [F, windows, kk]
        chosen = torch.gather(cells.expand(F_, -1, -1), 2, top)
        ok = torch.gather(valid.expand(F_, -1, -1), 2, top)
        # Picks of padding (windows smaller than k) go to a spare column N that is cut off again, so
        # that they never overwrite a real pick of the cell the padding id happens to name.
        chosen = torch.where(ok, chosen, torch.full_like(chosen, N))
        spare = torch.zeros(F_, N + 1, dtype=torch.bool, device=device)
        spare.scatter_(1, chosen.reshape(F_, -1), True)
        local = spare[:, :N]
    anchor = local.clone()
    if global_count > 0:
        # The reference zeroes the local anchors' deep scores before the top-k; received attention
        # is positive, so that equals excluding them, which also keeps the count exact for maps with
        # zero or negative entries.
        d = deep.float().masked_fill(local, float("-inf"))
        top = d.topk(global_count, dim=1).indices
        anchor.scatter_(1, top, True)
    return (anchor, local) if return_parts else anchor
