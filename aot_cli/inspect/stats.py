"""Per-video and per-cache statistics computed from the cache alone (no model, no video)."""
from __future__ import annotations

from typing import Optional

from ..cache import TokenCache
from ..core import KIND_ANCHOR, KIND_KEPT, KIND_KEYFRAME, KIND_NEWLINE


def video_stats(cache: TokenCache, video_id: str, per_frame: bool = True) -> dict:
    v = cache[video_id]
    meta = v.meta
    kind = v.kind
    counts = meta.get("counts", {})
    segments = v["segments"].tolist() if "segments" in v else []
    out = {
        "id": video_id,
        "path": meta.get("video", {}).get("path"),
        "frames": counts.get("frames"),
        "tokens": int((kind != KIND_NEWLINE).sum()),
        "newlines": int((kind == KIND_NEWLINE).sum()),
        "planned": counts.get("planned"),
        "uncompressed": counts.get("uncompressed_tokens"),
        "ratio": counts.get("ratio"),
        "requested_ratio": counts.get("requested_ratio"),
        "kinds": {"keyframe": int((kind == KIND_KEYFRAME).sum()), "kept": int((kind == KIND_KEPT).sum()),
                  "anchor": int((kind == KIND_ANCHOR).sum())},
        "dim": int(v.tokens.shape[1]) if v.tokens.dim() == 2 else None,
        "dtype": str(v.tokens.dtype).replace("torch.", ""),
        "model": meta.get("model", {}).get("model"),
        "method": meta.get("config", {}).get("method", {}).get("method"),
        "clips": [{"start": s, "length": l, "keyframe": s} for s, l in segments],
    }
    if per_frame:
        ts = v["timestamps"].tolist() if "timestamps" in v else []
        fi = v["frame_indices"].tolist() if "frame_indices" in v else []
        keyframes = {s for s, _ in segments}
        frames = []
        anchors = v["anchors_per_frame"].tolist()
        cells = v["cells_per_frame"].tolist()
        kept = v["kept_per_frame"].tolist()
        merged = v["merged_per_frame"].tolist()
        for f in range(len(anchors)):
            frames.append({"frame": f, "source_index": fi[f] if f < len(fi) else None,
                           "time_s": round(ts[f], 4) if f < len(ts) else None, "keyframe": f in keyframes,
                           "anchors": anchors[f], "anchor_cells": cells[f], "kept": kept[f], "merged": merged[f]})
        out["per_frame"] = frames
    return out


def cache_stats(cache: TokenCache, video: Optional[str] = None) -> dict:
    ids = [video] if video is not None else cache.ids()
    videos = [video_stats(cache, i) for i in ids]
    fails = [] if video is not None else [
        {"id": r.get("id"), "status": r.get("status"), "error": r.get("error"), "path": r.get("path")}
        for r in cache.failures()]
    return {"path": str(cache.path), "videos": videos, "failures": fails,
            "totals": {"videos": len(videos), "tokens": sum(v["tokens"] for v in videos),
                       "uncompressed": sum(v["uncompressed"] or 0 for v in videos), "failed": len(fails)}}
