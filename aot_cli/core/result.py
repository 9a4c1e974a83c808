"""The output of every compression method: tokens with their frame, cell and kind, and per-frame
statistics (docs/method.md §5, §9, §10)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from .budget import BudgetPlan


@dataclass
class CompressResult:
    """Compressed tokens of one video.

    Per output token: ``tokens [T, D]``, ``frame [T]`` (source frame; keyframe for anchors),
    ``index [T]`` (cell in the output grid ``grid``), ``kind [T]`` (``KIND_*``). Per frame ``[F]``:
    ``anchors_per_frame`` (anchors on the tower grid), ``cells_per_frame`` (anchor cells kept after
    pooling), ``kept_per_frame`` (tokens the frame contributes), ``merged_per_frame`` (tokens merged
    into anchors). ``segments`` are the clips; ``plan`` the exact-budget plan when one was used;
    ``anchor_mask [F, H*W]`` and ``cell_mask [F, H2*W2]`` the anchors before and after pooling.
    ``carry [T, C]``: when side features were given to :func:`~aot_cli.core.compress`, row ``t``
    is the same combination of input rows that made token ``t`` (docs/method.md, "Side features").
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
    carry: Optional[torch.Tensor] = None  # [T, C] side features made the same way as the tokens

    def __len__(self) -> int:
        return int(self.tokens.shape[0])
