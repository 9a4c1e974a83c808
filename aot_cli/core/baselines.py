"""Baselines with exact budgets (docs/method.md §10.1): random pruning, uniform spatial pooling and
attention top-k, each a pure function of the model's uncompressed tokens.

Every baseline works on the *full tokens*: the tower tokens after the model's own pooling
(``[F, n, D]`` on the output grid ``(h, w)``, ``n = h*w``), and keeps ``counts[f]`` tokens of frame
``f`` (the budget planner spreads ``target`` evenly over the frames, see
:func:`aot_cli.core.plan_budget` with ``inter=False``). Output order: frame by frame, each frame's
tokens in row-major cell order; every token has ``kind = KIND_KEPT`` and names its frame and its cell
of the output grid, so caches, inspection, loaders and the newline conventions treat the output
exactly as they treat ``method="none"``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Sequence, Tuple

import torch

from .budget import _spread
from .config import MAX_SEED  # noqa: F401  (largest seed random_prune accepts)
from .geometry import smallest_k_mask


def _check(full: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    if full.dim() != 3:
        raise ValueError(f"full tokens must be [F, n, D], got {tuple(full.shape)}")
    k = torch.as_tensor(list(counts), dtype=torch.long)
    if k.shape != (full.shape[0],):
        raise ValueError(f"counts must have one entry per frame ({full.shape[0]}), got {tuple(k.shape)}")
    if bool((k < 0).any()) or bool((k > full.shape[1]).any()):
        raise ValueError(f"per-frame counts must be in [0, {full.shape[1]}], got {k.tolist()}")
    return k


def _gather(full: torch.Tensor, keep: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens, frame and cell of the True entries of ``keep [F, n]``, frame by frame, row-major."""
    frame, cell = torch.nonzero(keep, as_tuple=True)
    return full[frame, cell], frame, cell


def random_prune(full: torch.Tensor, counts: Sequence[int], seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pruning: frame ``f`` keeps ``counts[f]`` of its cells drawn uniformly without
    replacement. The draw uses a CPU ``torch.Generator`` seeded with ``seed`` (0 .. 2**63 - 1), so
    a seed gives the same cells on every device.

    Args:
        full: ``[F, n, D]`` full tokens. counts: ``F`` ints.
    Returns:
        ``(tokens [T, D], frame [T], cell [T])`` with ``T = sum(counts)``.
    """
    k = _check(full, counts)
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    g = torch.Generator().manual_seed(int(seed))
    keys = torch.rand(full.shape[0], full.shape[1], generator=g)
    keep = smallest_k_mask(keys, k).to(full.device)
    return _gather(full, keep)


def attention_topk(full: torch.Tensor, scores: torch.Tensor, counts: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention top-k (VisionZip's dominant tokens): frame ``f`` keeps the ``counts[f]`` cells with
    the highest received attention of the deep score layer (§1), pooled as the tokens are
    (ties: the lower cell).

    Args:
        full: ``[F, n, D]``. scores: ``[F, n]`` pooled deep-layer scores. counts: ``F`` ints.
    Returns:
        ``(tokens [T, D], frame [T], cell [T])``.
    """
    k = _check(full, counts)
    if scores.shape != full.shape[:2]:
        raise ValueError(f"scores must be [F, n] = {tuple(full.shape[:2])}, got {tuple(scores.shape)}")
    keep = smallest_k_mask(-scores.float(), k.to(scores.device))
    return _gather(full, keep.to(full.device))


@lru_cache(maxsize=256)
def pool_regions(grid: Tuple[int, int], k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A partition of the ``h x w`` grid into exactly ``k`` rectangles of near-equal size:
    ``r = min(h, max(ceil(k / w), round(sqrt(k * h / w))))`` horizontal bands (heights as even as
    possible), band ``i`` cut into ``c_i`` columns (``c`` = ``k`` spread evenly over the bands,
    widths as even as possible). When ``k = r * c`` this is ``adaptive_avg_pool2d`` to ``r x c`` on
    grids that ``r`` and ``c`` divide.

    Returns ``(weights [k, h*w]`` float32, each row the mean over its rectangle,
    ``cell [k]`` the rectangle's centre cell, row-major).
    """
    h, w = int(grid[0]), int(grid[1])
    if not 1 <= k <= h * w:
        raise ValueError(f"cannot pool a {h}x{w} grid to {k} regions")
    r = min(h, max(-(-k // w), int(round((k * h / w) ** 0.5))))
    weights = torch.zeros(k, h * w)
    cells = torch.zeros(k, dtype=torch.long)
    row0, j = 0, 0
    for height, cols in zip(_spread(h, r), _spread(k, r)):
        col0 = 0
        for width in _spread(w, cols):
            rows = torch.arange(row0, row0 + height)
            cs = torch.arange(col0, col0 + width)
            ids = (rows[:, None] * w + cs[None, :]).reshape(-1)
            weights[j, ids] = 1.0 / len(ids)
            cells[j] = (row0 + (height - 1) // 2) * w + col0 + (width - 1) // 2
            col0 += width
            j += 1
        row0 += height
    return weights, cells


def uniform_pool(full: torch.Tensor, grid: Sequence[int], counts: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uniform spatial pooling to the budget: frame ``f``'s grid is cut into ``counts[f]``
    near-equal rectangles (:func:`pool_regions`) and each rectangle becomes the mean of its tokens,
    placed at the rectangle's centre cell. Arithmetic in float32, output in the tokens' dtype.

    Args:
        full: ``[F, n, D]``. grid: ``(h, w)`` with ``h*w = n``. counts: ``F`` ints.
    Returns:
        ``(tokens [T, D], frame [T], cell [T])``.
    """
    k = _check(full, counts)
    h, w = int(grid[0]), int(grid[1])
    if h * w != full.shape[1]:
        raise ValueError(f"full tokens have {full.shape[1]} cells, grid {h}x{w} has {h * w}")
    toks: List[torch.Tensor] = []
    frames: List[torch.Tensor] = []
    cells: List[torch.Tensor] = []
    dev = full.device
    for count in sorted(set(k.tolist()) - {0}):
        fs = torch.nonzero(k == count).flatten().to(dev)
        weights, cell = pool_regions((h, w), int(count))
        pooled = torch.einsum("kn,fnd->fkd", weights.to(dev), full[fs].float())  # [f, k, D]
        toks.append(pooled.reshape(-1, full.shape[2]))
        frames.append(fs.repeat_interleave(count))
        cells.append(cell.to(dev).repeat(len(fs)))
    if not toks:
        return full.new_zeros(0, full.shape[2]), torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, dtype=torch.long, device=dev)
    tokens, frame, cell = torch.cat(toks), torch.cat(frames), torch.cat(cells)
    order = torch.sort(frame, stable=True).indices  # frame by frame; regions keep their row-major order
    return tokens[order].to(full.dtype), frame[order], cell[order]
