"""One video through the whole pipeline: decode -> tower (+ scores, + projector) -> method ->
tensors and metadata ready for the cache. No file writing here (see :mod:`.batch`)."""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Optional

import torch

from ..config import to_dict
from ..core import KIND_NEWLINE, AOTConfig, CompressResult, compress
from .runconfig import FINGERPRINT_FORMAT, RunConfig, config_fingerprint, resolve_method  # noqa: F401  (re-exported)

SAVE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def source_paths(path) -> Dict[str, str]:
    """``{"path": absolute resolved path, "given_path": path as given}`` of a source video (the
    recorded ``meta["video"]`` fields; readers such as ``inspect --overlay`` use ``path``)."""
    given = str(path)
    try:
        resolved = str(Path(os.path.abspath(os.path.expanduser(given))).resolve())
    except (OSError, RuntimeError):  # a symlink loop: keep the absolute path
        resolved = os.path.abspath(given)
    return {"path": resolved, "given_path": given}


def append_newlines(res: CompressResult, newline: Optional[torch.Tensor], mode: Optional[str]):
    """Tokens, frame, index, kind with the model's newline embedding placed per its convention.

    ``one_token`` (LLaVA-OneVision): one newline after all visual tokens. ``grid`` (LLaVA-Video):
    one newline after every run of consecutive tokens from the same frame row (with the method
    off that is exactly one per row of every frame, as the model does). Newlines have
    ``kind = KIND_NEWLINE`` and ``frame = index = -1``.
    """
    tokens, frame, index, kind = res.tokens, res.frame, res.index, res.kind
    if newline is None or mode is None or len(tokens) == 0:
        return tokens, frame, index, kind
    nl = newline.to(tokens.dtype).reshape(1, -1)
    if mode == "one_token":
        ends = torch.tensor([len(tokens) - 1], device=tokens.device)
    elif mode == "grid":
        row = index // res.grid[1]
        key = torch.stack([frame, row, kind.long()], 1)
        change = (key[1:] != key[:-1]).any(1)
        ends = torch.cat([torch.nonzero(change).flatten(), torch.tensor([len(tokens) - 1], device=tokens.device)])
    else:
        raise ValueError(f"unknown newline convention {mode!r}")
    # position of every original token and newline in the output
    n = len(tokens)
    shift = torch.zeros(n, dtype=torch.long, device=tokens.device)
    shift[ends[:-1] + 1] = 1
    pos = torch.arange(n, device=tokens.device) + shift.cumsum(0)
    nl_pos = pos[ends] + 1
    total = n + len(ends)
    out = tokens.new_empty(total, tokens.shape[1])
    out[pos] = tokens
    out[nl_pos] = nl
    f = torch.full((total,), -1, dtype=frame.dtype, device=frame.device)
    i = torch.full((total,), -1, dtype=index.dtype, device=index.device)
    k = torch.full((total,), KIND_NEWLINE, dtype=kind.dtype, device=kind.device)
    f[pos], i[pos], k[pos] = frame, index, kind
    return out, f, i, k


def method_with_side(tokens: torch.Tensor, shallow, deep, grid, side: Dict[str, torch.Tensor], method: AOTConfig):
    """:func:`~aot_cli.core.compress` on one video's tower output, the adapter's side outputs
    (``TowerOutput.side``, each ``[F, N, C]``) carried through it. Returns ``(result, rows)``:
    ``rows`` maps each side output's name to its ``[T, C]`` rows, row ``t`` made the way token
    ``t`` was."""
    names = list(side)
    carry = torch.cat([side[n] for n in names], dim=-1) if names else None
    res = compress(tokens, shallow, deep, grid, method, carry=carry)
    rows: Dict[str, torch.Tensor] = {}
    if names:
        widths = [int(side[n].shape[-1]) for n in names]
        rows = dict(zip(names, res.carry.split(widths, dim=-1)))
        res.carry = None
    return res, rows


def grid_order(res: CompressResult) -> torch.Tensor:
    """The permutation that puts a result's tokens in (frame, cell) order, stable (two tokens of
    one cell -- a keyframe emitted twice -- keep the method's order: raw before merged)."""
    cells = res.grid[0] * res.grid[1]
    return torch.sort(res.frame.long() * cells + res.index.long(), stable=True).indices


def versions() -> Dict[str, str]:
    """Library versions recorded in every cache entry (``meta["versions"]``): aot, torch,
    transformers, safetensors, and the decoders (PyAV, FFmpeg: see :func:`~aot_cli.video.decoder_versions`)."""
    import safetensors
    import transformers

    from .. import __version__
    from ..video import decoder_versions

    return {"aot": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, **decoder_versions()}


@dataclass
class VideoResult:
    video_id: str
    tensors: Dict[str, torch.Tensor]
    meta: dict
    result: CompressResult
    timings: Dict[str, float]


def compress_frames(video_id: str, decoded, adapter, cfg: RunConfig, *, extra_meta: Optional[dict] = None,
                    fingerprint: Optional[str] = None) -> VideoResult:
    """Run tower + method on an already decoded video (``aot_cli.video.DecodedVideo``).
    ``fingerprint``: the run's :func:`config_fingerprint` (computed when None)."""
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    pixels = adapter.preprocess(decoded.frames)
    t1 = time.perf_counter()
    score_layers = cfg.model.score_layers or adapter.profile.score_layers
    out = adapter.encode(pixels, score_layers=score_layers)
    t2 = time.perf_counter()
    method = resolve_method(cfg, adapter.profile)
    res, side = method_with_side(out.tokens, out.shallow, out.deep, out.grid, out.side, method)
    t3 = time.perf_counter()
    timings.update(preprocess=t1 - t0, tower=t2 - t1, method=t3 - t2)
    return build_result(video_id, decoded, adapter, cfg, method, res, timings, extra_meta, fingerprint=fingerprint,
                        side=side)


def build_result(video_id, decoded, adapter, cfg: RunConfig, method: AOTConfig, res: CompressResult,
                 timings: Dict[str, float], extra_meta: Optional[dict] = None, *,
                 fingerprint: Optional[str] = None, given_path=None,
                 side: Optional[Dict[str, torch.Tensor]] = None) -> VideoResult:
    """Tensors and metadata of one cache entry. ``fingerprint``: the run's
    :func:`config_fingerprint` (computed from ``cfg`` and the adapter's checkpoint when None). ``given_path``: the source
    path as the user gave it (default: the decoder's); ``meta["video"]["path"]`` is its absolute,
    resolved form and ``meta["video"]["given_path"]`` the path as given. ``side``: the carried side
    outputs' rows (:func:`method_with_side`), stored as ``[G, T, C/G]`` with ``G`` the adapter's
    group count (``adapter.side_outputs``). A profile with ``token_order == "grid"`` stores the
    tokens (and side rows) in (frame, cell) order."""
    side = dict(side or {})
    if adapter.profile.token_order == "grid" and len(res):
        order = grid_order(res)
        res = dataclasses.replace(res, tokens=res.tokens[order], frame=res.frame[order], index=res.index[order],
                                  kind=res.kind[order])
        side = {name: rows[order] for name, rows in side.items()}
    newline_mode = adapter.profile.newline
    tokens, frame, index, kind = append_newlines(res, adapter.newline, newline_mode)
    save_dtype = adapter.dtype if cfg.storage.save_dtype == "model" else SAVE_DTYPES[cfg.storage.save_dtype]
    Fn = decoded.frames.shape[0]
    method_frames = int(res.kept_per_frame.shape[0])  # temporal patches for Qwen towers, else Fn
    tensors = {
        "tokens": tokens.to(save_dtype).cpu().contiguous(),
        "frame": frame.to(torch.int32).cpu(),
        "index": index.to(torch.int32).cpu(),
        "kind": kind.to(torch.uint8).cpu(),
        "frame_indices": torch.as_tensor(decoded.indices, dtype=torch.int64),
        "timestamps": torch.as_tensor(decoded.timestamps, dtype=torch.float64),
        "anchors_per_frame": res.anchors_per_frame.to(torch.int32).cpu(),
        "cells_per_frame": res.cells_per_frame.to(torch.int32).cpu(),
        "kept_per_frame": res.kept_per_frame.to(torch.int32).cpu(),
        "merged_per_frame": res.merged_per_frame.to(torch.int32).cpu(),
        "segments": torch.as_tensor(res.segments, dtype=torch.int32).reshape(-1, 2),
    }
    if res.anchor_mask is not None:
        tensors["anchor_mask"] = res.anchor_mask.to(torch.uint8).cpu()
        tensors["cell_mask"] = res.cell_mask.to(torch.uint8).cpu()
    groups = adapter.side_outputs
    for name, rows in side.items():
        g = int(groups.get(name, 1))
        tensors[name] = rows.reshape(len(rows), g, -1).transpose(0, 1).to(save_dtype).cpu().contiguous()
    entry_tensors, entry_meta = adapter.video_entry(Fn, int(decoded.frames.shape[1]), int(decoded.frames.shape[2]))
    tensors.update(entry_tensors)
    desc = adapter.describe()
    visual = len(res)
    tokens_per_frame = res.grid[0] * res.grid[1]
    planned = res.plan.target if res.plan is not None else None
    if fingerprint is None:
        from ..models.identity import adapter_identity

        fingerprint = config_fingerprint(cfg, adapter_identity(adapter))
    video = decoded.info.to_dict()
    video.update(source_paths(given_path if given_path is not None else video.get("path", "")))
    meta = {
        "video_id": video_id,
        "video": video,
        "sampling": {"decoder": decoded.decoder, "requested_frames": decoded.requested, "frames": Fn,
                     "padded": decoded.padded, "notes": list(decoded.notes),
                     "read": getattr(decoded, "read", ""), "seek": getattr(decoded, "seek", "exact"),
                     "decode_size": list(decoded.frames.shape[1:3])},
        "model": desc,
        "profile": adapter.profile.to_dict(),
        "config": {"decode": to_dict(cfg.decode), "model": to_dict(cfg.model), "method": to_dict(method),
                   "storage": to_dict(cfg.storage)},
        "plan": res.plan.to_dict() if res.plan is not None else None,
        "counts": {
            "frames": Fn,
            "method_frames": method_frames,
            "tower_grid": list(_tower_grid(adapter, res)),
            "grid": list(res.grid),
            "tokens_per_frame": tokens_per_frame,
            "uncompressed_tokens": method_frames * tokens_per_frame,
            "planned": planned,
            "achieved": visual,
            "ratio": visual / max(1, method_frames * tokens_per_frame),
            "requested_ratio": method.ratio,
            "newlines": int(len(tokens) - visual),
            "total": int(len(tokens)),
        },
        "newline": newline_mode,
        "token_dtype": str(tensors["tokens"].dtype).replace("torch.", ""),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "versions": versions(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config_fingerprint": fingerprint,
        "config_format": FINGERPRINT_FORMAT,
        "sha256": decoded.info.sha256,
    }
    meta.update(entry_meta)
    meta["token_order"] = adapter.profile.token_order
    if side:
        meta["side_outputs"] = {name: list(tensors[name].shape) for name in side}
    if extra_meta:
        meta["extra"] = extra_meta
    return VideoResult(video_id, tensors, meta, res, timings)


def _tower_grid(adapter, res: CompressResult):
    """The tower's own grid when it does not follow the frame size, else the result's grid."""
    try:
        return adapter.grid
    except ValueError:
        return res.grid


def compress_video(path, cfg: Optional[RunConfig] = None, adapter=None, video_id: Optional[str] = None) -> VideoResult:
    """Decode, encode and compress one video file (library entry point)."""
    from ..models import load_model
    from ..video import decode_video
    from .workers import decode_target

    cfg = cfg or RunConfig()
    adapter = adapter or load_model(cfg.model)
    t0 = time.perf_counter()
    decoded = decode_video(Path(path), cfg.decode, default_frames=adapter.profile.default_frames,
                           target_size=decode_target(adapter, cfg.decode))
    t_dec = time.perf_counter() - t0
    res = compress_frames(video_id or Path(path).name, decoded, adapter, cfg)
    res.timings["decode"] = t_dec
    res.meta["timings_s"]["decode"] = round(t_dec, 4)
    return res
