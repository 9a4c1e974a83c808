"""Inter-frame OT merge over clips with a keyframe (docs/method.md §5)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .geometry import cosine, smallest_k_mask, split_by_mask
from .sinkhorn import sinkhorn

#: Token kinds recorded for every output token.
KIND_KEYFRAME = 0  # raw token of a clip's keyframe, emitted untouched
KIND_KEPT = 1  # token of a non-key frame that stayed as its own token (or any token when the method is off)
KIND_ANCHOR = 2  # keyframe token after absorbing the merged tokens of its clip
KIND_NEWLINE = 3  # a model's newline embedding appended after the visual tokens (frame = index = -1)
KIND_NAMES = {KIND_KEYFRAME: "keyframe", KIND_KEPT: "kept", KIND_ANCHOR: "anchor", KIND_NEWLINE: "newline"}

_COS_LIMIT = 1.0 - 1e-6


@dataclass
class InterFrameResult:
    """Output of :func:`inter_frame_merge`.

    ``tokens [T, D]``; per output token ``frame [T]`` (source frame; the keyframe for anchors),
    ``index [T]`` (cell in its frame's grid) and ``kind [T]`` (``KIND_*``). Per frame:
    ``kept_per_frame [F]`` (tokens the frame contributes to the output: raw keyframe tokens for a
    keyframe, kept tokens otherwise) and ``merged_per_frame [F]`` (tokens merged into anchors).
    """

    tokens: torch.Tensor
    frame: torch.Tensor
    index: torch.Tensor
    kind: torch.Tensor
    kept_per_frame: torch.Tensor
    merged_per_frame: torch.Tensor
    carry: Optional[torch.Tensor] = None  # [T, C] carried side features, when given


def _quantile_lower(values: torch.Tensor, valid: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row ``torch.quantile(values[row][valid[row]], q)`` (linear interpolation), float64.
    Rows with no valid entry give +inf."""
    v = values.double().masked_fill(~valid, float("inf"))
    srt = v.sort(dim=1).values
    n = valid.sum(1)
    pos = q * (n - 1).clamp_min(0).double()
    lo = pos.floor()
    w = pos - lo
    lo_i = lo.long().clamp_min(0)
    hi_i = pos.ceil().long().clamp_min(0)
    below = srt.gather(1, lo_i[:, None]).squeeze(1)
    above = srt.gather(1, hi_i[:, None]).squeeze(1)
    out = torch.lerp(below, above, w)
    return torch.where(n > 0, out, torch.full_like(out, float("inf")))


def inter_frame_merge(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    segments: Sequence[Tuple[int, int]],
    keep_ratio: Optional[float] = None,
    eps: float = 0.1,
    sigma_t: float = 1.5,
    scale: float = 1.0,
    *,
    keep_counts: Optional[Sequence[int]] = None,
    emit_keyframe: bool = True,
    max_iter: int = 100,
    tol: float = 1e-2,
    log_domain: bool = False,
    stop: str = "reference",
    carry: Optional[torch.Tensor] = None,
) -> InterFrameResult:
    """Merge each clip's later frames into its keyframe's tokens.

    Args:
        tokens: ``[F, N, D]`` pooled tokens; ``mask [F, N]`` marks each frame's kept cells.
        segments: ``[(start, length), ...]`` clips; the first frame of each is its keyframe.
        keep_ratio: reference keep rule: a source stays iff its plan confidence ``pmax`` is below
            the ``keep_ratio`` quantile of its frame's confidences.
        keep_counts: instead of ``keep_ratio``, keep exactly ``keep_counts[f]`` lowest-confidence
            tokens of frame ``f`` (capped by the frame's token count) — the exact-budget rule.
        eps, sigma_t, scale: Sinkhorn regularisation, temporal-cost width, merge strength.
        emit_keyframe: emit the untouched keyframe tokens before the clip's kept tokens (the
            reference emits the keyframe twice: raw and as merged anchors; ``False`` emits it once,
            as anchors, docs/method.md §8.3).
        carry: optional side features ``[F, N, C]`` of the same tokens; they take no part in any
            decision and every output row of ``carry`` (``InterFrameResult.carry [T, C]``) is the
            same combination of input rows as its token.

    Each frame step is one batched Sinkhorn over all clips, every clip stopping on its own (in the
    reference each clip and frame is a separate call).
    """
    if (keep_ratio is None) == (keep_counts is None):
        raise ValueError("give exactly one of keep_ratio or keep_counts")
    if keep_ratio is not None and not 0.0 <= keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in [0, 1], got {keep_ratio}")
    Fn, N, D = tokens.shape
    device = tokens.device
    segments = [(int(s), int(l)) for s, l in segments]
    for s, l in segments:
        if l < 1 or s < 0 or s + l > Fn:
            raise ValueError(f"segment (start={s}, length={l}) is outside {Fn} frames")
    idx, valid, count = split_by_mask(mask, full_width=True)  # [F,N]: static shapes
    K = idx.shape[1]
    feats = torch.gather(tokens.float(), 1, idx[:, :, None].expand(-1, -1, D))  # [F,K,D]
    cfeats = None
    if carry is not None:
        if carry.shape[:2] != (Fn, N):
            raise ValueError(f"carry must be [F, N, C] with F, N = {Fn}, {N}, got {tuple(carry.shape)}")
        cfeats = torch.gather(carry.float(), 1, idx[:, :, None].expand(-1, -1, carry.shape[2]))
    counts_t = None
    if keep_counts is not None:
        counts_t = torch.as_tensor(list(keep_counts), device=device, dtype=torch.long)
        if counts_t.shape != (Fn,):
            raise ValueError(f"keep_counts must have one entry per frame ({Fn}), got {tuple(counts_t.shape)}")

    starts = torch.tensor([s for s, _ in segments], device=device, dtype=torch.long)
    Y = feats[starts].clone()  # [C,K,D] anchors per clip
    Y0 = Y.clone()
    Yc = cfeats[starts].clone() if cfeats is not None else None
    Yc0 = Yc.clone() if Yc is not None else None
    ymask = valid[starts]
    keep_frame = torch.zeros(Fn, K, dtype=torch.bool, device=device)
    merged_frame = torch.zeros(Fn, K, dtype=torch.bool, device=device)
    max_len = max((l for _, l in segments), default=0)
    for t in range(1, max_len):
        active = [c for c, (_, l) in enumerate(segments) if l > t]
        act = torch.tensor(active, device=device, dtype=torch.long)
        fr = starts[act] + t
        X, xmask = feats[fr], valid[fr]
        Ya, yma = Y[act], ymask[act]
        pair = xmask[:, :, None] & yma[:, None, :]
        c_sim = 1.0 - cosine(X, Ya).clamp(-_COS_LIMIT, _COS_LIMIT)
        c_min = c_sim.masked_fill(~pair, float("inf")).amin(dim=(1, 2), keepdim=True)
        c_sim = c_sim - torch.where(torch.isfinite(c_min), c_min, torch.zeros_like(c_min))
        c_time = 1.0 - torch.exp(torch.tensor(-(t * t) / (2.0 * sigma_t * sigma_t), dtype=torch.float32))
        cost = c_sim * c_time.to(device)
        plan = sinkhorn(cost, eps=eps, max_iter=max_iter, tol=tol, log_domain=log_domain,
                        row_mask=xmask, col_mask=yma, batch_stop="per_problem", stop=stop)
        p = plan / plan.sum(2, keepdim=True)
        has_anchor = yma.any(1)
        p = torch.where(pair, p, torch.zeros((), device=device))
        pmax = p.amax(dim=2)
        if counts_t is None:
            q = _quantile_lower(pmax, xmask, keep_ratio)
            keep = (pmax.double() < q[:, None]) & xmask
        else:
            keep = smallest_k_mask(pmax, counts_t[fr], xmask)
        keep = keep | (xmask & ~has_anchor[:, None])  # nothing to merge into: the tokens stay
        merged = xmask & ~keep
        pm = p * merged[:, :, None].float()
        load = pm.sum(1)  # [A,K]

        def absorbed(anchors: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
            agg = torch.bmm(pm.transpose(1, 2), sources)  # [A,K,*]
            return (anchors + scale * agg) / (1.0 + scale * load)[:, :, None]

        Y[act] = absorbed(Ya, X)
        if Yc is not None:
            Yc[act] = absorbed(Yc[act], cfeats[fr])
        keep_frame[fr] = keep
        merged_frame[fr] = merged

    out = _assemble(tokens.dtype, segments, Y0, Y, ymask, feats, idx, valid, keep_frame, merged_frame, emit_keyframe)
    if carry is not None:
        out.carry = _assemble(carry.dtype, segments, Yc0, Yc, ymask, cfeats, idx, valid, keep_frame, merged_frame,
                              emit_keyframe).tokens
    return out


def _assemble(dtype, segments, Y0, Y, ymask, feats, idx, valid, keep_frame, merged_frame, emit_keyframe) -> InterFrameResult:
    """Concatenate clip outputs in order: raw keyframe, kept tokens of frames 1..L-1, anchors
    (``Y0``/``Y``/``feats``: raw anchors, merged anchors, features; tokens or carried rows)."""
    Fn, K = valid.shape
    device = feats.device
    pieces: List[torch.Tensor] = []
    frames: List[torch.Tensor] = []
    cells: List[torch.Tensor] = []
    kinds: List[torch.Tensor] = []

    def emit(x: torch.Tensor, sel: torch.Tensor, frame: int, kind: int) -> None:
        pieces.append(x[sel])
        n = pieces[-1].shape[0]
        frames.append(torch.full((n,), frame, dtype=torch.long, device=device))
        cells.append(idx[frame][sel])
        kinds.append(torch.full((n,), kind, dtype=torch.uint8, device=device))

    kept_per_frame = keep_frame.sum(1)
    for c, (s, l) in enumerate(segments):
        if emit_keyframe:
            emit(Y0[c], ymask[c], s, KIND_KEYFRAME)
        for t in range(1, l):
            emit(feats[s + t], keep_frame[s + t], s + t, KIND_KEPT)
        emit(Y[c], ymask[c], s, KIND_ANCHOR)
        if emit_keyframe:
            kept_per_frame[s] = ymask[c].sum()
    D = feats.shape[2]
    return InterFrameResult(
        tokens=torch.cat(pieces).to(dtype) if pieces else feats.new_zeros(0, D).to(dtype),
        frame=torch.cat(frames) if frames else torch.zeros(0, dtype=torch.long, device=device),
        index=torch.cat(cells) if cells else torch.zeros(0, dtype=torch.long, device=device),
        kind=torch.cat(kinds) if kinds else torch.zeros(0, dtype=torch.uint8, device=device),
        kept_per_frame=kept_per_frame,
        merged_per_frame=merged_frame.sum(1),
    )
