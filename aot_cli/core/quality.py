"""The ``quality`` preset's merge (docs/method.md §10.3): per clip, anchors placed evenly over the
clip's frames plus its highest-attention tokens, then every token of the clip aggregated into an
anchor by balanced optimal transport, repeated a few rounds.

Works on the model's own tokens (after its pooling, §4), one clip (§5, §7) at a time, all clips in
one batch. Exact budget: clip ``c`` gets ``t_c`` anchors, the per-frame budgets of its frames
summed, and emits exactly ``t_c`` tokens, each once (no raw keyframe copy).

Round ``r`` of the aggregation, for each clip with tokens ``z_i`` and anchors ``a_j``:

1. cost ``C[i, j] = 1 - cos(z_i, a_j)``; entropic OT with uniform marginals (every token carries
   the same mass, every anchor receives the same mass, the model the OT error of §10.2 measures),
   Sinkhorn (§6) with ``eps`` and the converged stop;
2. each token joins the anchor its plan row favours (``argmax_j T[i, j]``); the plan gives every
   anchor the same mass, so an anchor takes tokens from where the nearest-anchor rule would leave
   too many (where many tokens are nearly alike, the plan spreads them over several similar anchors
   and the rounding can leave some of them without members);
3. ``a_j`` <- the weighted mean of its members, weight ``1 + salient_weight`` for the clip's
   salient tokens (the top ``salient_share`` by deep-layer attention, §1) and 1 for the others;
   an anchor that received no token keeps its value.

Each output token is an anchor's final value, placed at the frame and cell of its member most
similar to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .baselines import pool_regions
from .budget import _spread
from .geometry import smallest_k_mask
from .sinkhorn import sinkhorn


@dataclass
class QualityMerge:
    """Output of :func:`quality_merge`: ``tokens [T, D]`` (in the input dtype), ``frame [T]`` and
    ``index [T]`` (cell on the grid of the tokens given) of every merged anchor, clip by clip, each
    clip's tokens in (frame, cell) order; ``members [T]``: how many tokens each one absorbed
    (itself included); ``seeds_per_frame [F]``: initial anchors per frame (grid and attention)."""

    tokens: torch.Tensor
    frame: torch.Tensor
    index: torch.Tensor
    members: torch.Tensor
    seeds_per_frame: torch.Tensor
    carry: Optional[torch.Tensor] = None  # [T, C] carried side features, when given


#: Largest [clips, tokens, anchors] batch solved at once (float32 elements; about 128 MiB a tensor).
BATCH_ELEMENTS = 1 << 25


def _grid_picks(grid: Tuple[int, int], counts: Sequence[int], cells: int, device) -> torch.Tensor:
    """``[len(counts) * cells]`` mask: on frame ``f`` of the clip, the centre cells of
    :func:`pool_regions` for ``counts[f]`` regions."""
    mask = torch.zeros(len(counts) * cells, dtype=torch.bool)
    for f, k in enumerate(counts):
        if k > 0:
            mask[f * cells + pool_regions(grid, int(k))[1]] = True
    return mask.to(device)


def initial_anchors(scores: torch.Tensor, valid: torch.Tensor, clips: Sequence[Tuple[int, int]],
                    grid: Sequence[int], attention_share: float) -> torch.Tensor:
    """The starting anchors of each clip, ``[C, M]`` bool over the clip's tokens (frame by frame,
    row-major; ``M = max length * h * w``).

    Clip ``c`` of ``l`` frames and budget ``t`` gets ``a = floor(attention_share * t + 0.5)``
    attention anchors and ``t - a`` grid anchors: the grid anchors are spread evenly over the clip's
    frames and placed on the centre cells of equal rectangles (:func:`pool_regions`), the attention
    anchors are the clip's other tokens with the highest ``scores [C, M]`` (ties: the earlier token).
    ``valid [C, M]`` marks real tokens; ``clips``: ``(length, budget)`` per clip.
    """
    h, w = int(grid[0]), int(grid[1])
    n = h * w
    C, M = scores.shape
    device = scores.device
    n_attn = [min(t, int(math.floor(attention_share * t + 0.5))) for _, t in clips]
    init = torch.stack([
        torch.cat([_grid_picks((h, w), _spread(t - a, l), n, device), torch.zeros(M - l * n, dtype=torch.bool, device=device)])
        for (l, t), a in zip(clips, n_attn)])
    attn = smallest_k_mask(-scores.float(), torch.tensor(n_attn, device=device), valid & ~init)
    return init | attn


def quality_merge(
    tokens: torch.Tensor,
    scores: torch.Tensor,
    grid: Sequence[int],
    segments: Sequence[Tuple[int, int]],
    counts: Sequence[int],
    *,
    attention_share: float = 0.1,
    salient_share: float = 0.1,
    salient_weight: float = 6.0,
    rounds: int = 3,
    eps: float = 0.05,
    max_iter: int = 100,
    tol: float = 1e-2,
    log_domain: bool = False,
    carry: Optional[torch.Tensor] = None,
) -> QualityMerge:
    """Merge each clip's tokens into its anchors (see the module docstring).

    Args:
        tokens: ``[F, n, D]`` the model's uncompressed tokens on ``grid = (h, w)``, ``n = h*w``.
        scores: ``[F, n]`` deep-layer received attention pooled like the tokens (§1, §4).
        segments: clips ``[(start, length), ...]`` covering the frames in order.
        counts: per-frame budgets (``F`` ints); clip ``c`` gets the sum over its frames.
        attention_share: share of each clip's anchors placed on its highest-attention tokens; the
            others are spread evenly over the clip's frames on the centre cells of equal rectangles.
        salient_share, salient_weight: the top ``salient_share`` of each clip's tokens by
            ``scores`` weigh ``1 + salient_weight`` in the anchors' means.
        rounds: transport-and-average rounds (>= 1).
        eps, max_iter, tol, log_domain: Sinkhorn settings (converged stop: L1 row-marginal
            error below ``tol``).
        carry: optional side features ``[F, n, C]`` of the same tokens; no decision uses them, and
            each output row of ``carry`` is the same weighted mean of members as its token.
    Returns:
        :class:`QualityMerge` with ``sum(counts)`` tokens.
    """
    Fn, n, D = tokens.shape
    h, w = int(grid[0]), int(grid[1])
    if h * w != n or scores.shape != (Fn, n):
        raise ValueError(f"tokens [F,n,D]={tuple(tokens.shape)} and scores {tuple(scores.shape)} do not match grid {h}x{w}")
    if len(counts) != Fn or sum(l for _, l in segments) != Fn:
        raise ValueError(f"counts ({len(counts)}) and segments ({sum(l for _, l in segments)} frames) must cover {Fn} frames")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if carry is not None and carry.shape[:2] != (Fn, n):
        raise ValueError(f"carry must be [F, n, C] with F, n = {Fn}, {n}, got {tuple(carry.shape)}")
    device = tokens.device
    budgets = [sum(int(k) for k in counts[s:s + l]) for s, l in segments]
    clips = [(s, l, t) for (s, l), t in zip(segments, budgets) if t > 0]
    seeds_per_frame = torch.zeros(Fn, dtype=torch.long, device=device)
    parts: List[Tuple[torch.Tensor, ...]] = []
    # Clips go through in batches whose [clips, tokens, anchors] tensors stay below BATCH_ELEMENTS.
    i = 0
    while i < len(clips):
        size = max(l for _, l, _ in clips[i:]) * n * max(t for _, _, t in clips[i:])
        j = min(len(clips), i + max(1, BATCH_ELEMENTS // max(1, size)))
        parts.append(_merge_batch(tokens, scores, (h, w), clips[i:j], seeds_per_frame, attention_share=attention_share,
                                  salient_share=salient_share, salient_weight=salient_weight, rounds=rounds, eps=eps,
                                  max_iter=max_iter, tol=tol, log_domain=log_domain, carry=carry))
        i = j
    if not parts:
        none = torch.zeros(0, dtype=torch.long, device=device)
        empty = carry.new_zeros(0, carry.shape[2]) if carry is not None else None
        return QualityMerge(tokens.new_zeros(0, D), none, none, none, seeds_per_frame, empty)
    out, frame, cell, members, carried = (torch.cat(x) if x[0] is not None else None for x in zip(*parts))
    return QualityMerge(tokens=out.to(tokens.dtype), frame=frame, index=cell, members=members,
                        seeds_per_frame=seeds_per_frame,
                        carry=carried.to(carry.dtype) if carried is not None else None)


def _merge_batch(tokens, scores, grid, clips, seeds_per_frame, *, attention_share, salient_share, salient_weight,
                 rounds, eps, max_iter, tol, log_domain, carry=None):
    """:func:`quality_merge` on the clips ``[(start, length, budget), ...]`` as one padded batch;
    adds the initial anchors to ``seeds_per_frame``. Returns float32 tokens, frame, cell, members
    and the carried rows (None without ``carry``)."""
    h, w = grid
    n, D = h * w, tokens.shape[2]
    device = tokens.device
    C = len(clips)
    M = max(l for _, l, _ in clips) * n
    K = max(t for _, _, t in clips)

    # Clip batch, padded: z [C, M, D], sc [C, M], valid rows; frame/cell of every row.
    frame_of = torch.full((C, M), -1, dtype=torch.long, device=device)
    for c, (start, length, _) in enumerate(clips):
        frame_of[c, : length * n] = torch.arange(start, start + length, device=device).repeat_interleave(n)
    valid = frame_of >= 0
    safe = frame_of.clamp_min(0)
    cell_of = torch.arange(M, device=device).remainder(n).expand(C, M)
    z = tokens[safe, cell_of].float() * valid[:, :, None]
    sc = scores.float()[safe, cell_of].masked_fill(~valid, float("-inf"))

    init = initial_anchors(sc, valid, [(l, t) for _, l, t in clips], grid, attention_share)
    seeds_per_frame.index_add_(0, frame_of[init], torch.ones(int(init.sum()), dtype=torch.long, device=device))
    # anchors in (frame, cell) order = row order within the clip; padded to K columns
    a_idx = torch.sort((~init).to(torch.uint8), dim=1, stable=True).indices[:, :K]
    a_valid = torch.arange(K, device=device)[None, :] < init.sum(1, keepdim=True)
    anchors = torch.gather(z, 1, a_idx[:, :, None].expand(-1, -1, D))
    zc = anchors_c = None
    if carry is not None:
        zc = carry[safe, cell_of].float() * valid[:, :, None]
        anchors_c = torch.gather(zc, 1, a_idx[:, :, None].expand(-1, -1, zc.shape[2]))

    # Salience weights: the top salient_share of each clip's tokens.
    n_sal = valid.sum(1).double().mul(salient_share).add(0.5).floor().long().clamp_min(1)
    weight = (1.0 + salient_weight * smallest_k_mask(-sc, n_sal, valid).float()) * valid

    zn = F.normalize(z, dim=2)
    big = torch.finfo(torch.float32).max
    log_c = None  # each round starts from the previous round's column scaling
    for _ in range(rounds):
        cost = 1.0 - torch.bmm(zn, F.normalize(anchors, dim=2).transpose(1, 2))  # [C, M, K]
        # A constant per row does not change the plan; removing the row minimum keeps C/eps small
        # enough for the kernel form of Sinkhorn in most rows.
        cost = cost - cost.masked_fill(~a_valid[:, None, :], big).amin(2, keepdim=True).masked_fill(~valid[:, :, None], 0.0)
        plan, log_c = sinkhorn(cost, eps=eps, max_iter=max_iter, tol=tol, log_domain=log_domain,
                               row_mask=valid, col_mask=a_valid, stop="marginal", init_log_c=log_c, return_log_c=True)
        join = plan.masked_fill(~a_valid[:, None, :], -1.0).argmax(2)  # [C, M]
        onehot = F.one_hot(join, K).float() * weight[:, :, None]  # [C, M, K]
        load = onehot.sum(1)  # [C, K]
        mean = torch.bmm(onehot.transpose(1, 2), z) / load.clamp_min(1e-30)[:, :, None]
        anchors = torch.where((load > 0)[:, :, None], mean, anchors)
        if zc is not None:
            mean_c = torch.bmm(onehot.transpose(1, 2), zc) / load.clamp_min(1e-30)[:, :, None]
            anchors_c = torch.where((load > 0)[:, :, None], mean_c, anchors_c)

    # Placement: the member most similar to the final anchor.
    cos = torch.bmm(zn, F.normalize(anchors, dim=2).transpose(1, 2))
    member = F.one_hot(join, K).bool() & valid[:, :, None]
    best = cos.masked_fill(~member, float("-inf")).argmax(1)  # [C, K]
    has = member.any(1) & a_valid
    where = torch.where(has, best, a_idx)
    # An anchor left without members takes the unclaimed token most similar to it, so that no
    # two outputs share a frame and cell (members are disjoint, so the others never collide).
    claimed = torch.zeros(C, M + 1, dtype=torch.bool, device=device)  # column M: a spare for "none"
    claimed.scatter_(1, torch.where(has, best, torch.full_like(best, M)), True)
    claimed = claimed[:, :M]
    empty = a_valid & ~has
    rows = torch.arange(C, device=device)
    for _ in range(int(empty.sum(1).max())):
        j = empty.float().argmax(1)  # the next anchor without members, per clip
        todo = empty[rows, j]
        pick = cos[rows, :, j].masked_fill(claimed | ~valid, float("-inf")).argmax(1)
        where[rows[todo], j[todo]] = pick[todo]
        claimed[rows[todo], pick[todo]] = True
        empty[rows[todo], j[todo]] = False
    counts_t = member.sum(1)
    # (frame, cell) order inside each clip; padding columns last
    key = torch.where(a_valid, where, torch.full_like(where, M))
    order = torch.sort(key, dim=1, stable=True).indices
    where, a_ok = torch.gather(where, 1, order), torch.gather(a_valid, 1, order)
    anchors = torch.gather(anchors, 1, order[:, :, None].expand(-1, -1, D))
    carried = None
    if anchors_c is not None:
        carried = torch.gather(anchors_c, 1, order[:, :, None].expand(-1, -1, anchors_c.shape[2]))[a_ok]
    counts_t = torch.gather(counts_t, 1, order)
    frame = torch.gather(frame_of, 1, where)
    cell = torch.gather(cell_of, 1, where)
    return anchors[a_ok], frame[a_ok], cell[a_ok], counts_t[a_ok], carried
