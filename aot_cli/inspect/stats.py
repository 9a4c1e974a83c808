"""Per-video and per-cache statistics computed from the cache alone (no model, no video, no torch:
headers and the small per-frame tensors are read as numpy arrays)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ..cache import CacheError, TokenCache
from ..cache.format import KIND_ANCHOR, KIND_KEPT, KIND_KEYFRAME, KIND_NEWLINE

PER_FRAME = ("anchors_per_frame", "cells_per_frame", "kept_per_frame", "merged_per_frame")


def _ints(video, name: str) -> Optional[List[int]]:
    return [int(x) for x in video.array(name).tolist()] if name in video else None


def video_stats(cache: TokenCache, video_id: str, per_frame: bool = True) -> dict:
    """Statistics of one cached video: ``id``, ``path``, ``frames``, ``tokens`` (visual, newlines
    excluded), ``newlines``, ``planned``, ``uncompressed``, ``ratio``, ``requested_ratio``,
    ``kinds`` (keyframe/kept/anchor counts), ``dim``, ``dtype``, ``model``, ``method``, ``clips``,
    ``picture`` (:func:`picture_facts`: geometry and colour of the source, for auditing) and, with
    ``per_frame``, one row per sampled frame. Raises :class:`CacheError` (one line,
    naming the file, the video and the field) when the video's entry is damaged."""
    v = cache[video_id]
    kind = v.array("kind") if "kind" in v else np.zeros(0, dtype=np.uint8)
    segments = [(int(s), int(n)) for s, n in v.array("segments").tolist()] if "segments" in v else []
    shape = v.shapes.get("tokens")
    out: Dict[str, Any] = {
        "id": video_id,
        "path": v.meta_value("video.path", "str"),
        "frames": v.meta_value("counts.frames", "int"),
        "tokens": int((kind != KIND_NEWLINE).sum()),
        "newlines": int((kind == KIND_NEWLINE).sum()),
        "planned": v.meta_value("counts.planned", "int"),
        "uncompressed": v.meta_value("counts.uncompressed_tokens", "int"),
        "ratio": v.meta_value("counts.ratio", "number"),
        "requested_ratio": v.meta_value("counts.requested_ratio", "number"),
        "kinds": {"keyframe": int((kind == KIND_KEYFRAME).sum()), "kept": int((kind == KIND_KEPT).sum()),
                  "anchor": int((kind == KIND_ANCHOR).sum())},
        "dim": int(shape[1]) if shape is not None else None,
        "dtype": v.dtype_name("tokens") if shape is not None else None,
        "model": v.meta_value("model.model", "str"),
        "method": v.meta_value("config.method.method", "str"),
        "clips": [{"start": s, "length": n, "keyframe": s} for s, n in segments],
        "picture": picture_facts(v),
    }
    if per_frame:
        ts = [float(x) for x in v.array("timestamps").tolist()] if "timestamps" in v else []
        fi = _ints(v, "frame_indices") or []
        columns = {name: _ints(v, name) for name in PER_FRAME}
        count = max([len(fi), len(ts)] + [len(c) for c in columns.values() if c is not None])
        keyframes = {s for s, _ in segments}

        def at(values: Optional[list], f: int) -> Any:
            return values[f] if values is not None and f < len(values) else None

        out["per_frame"] = [
            {"frame": f, "source_index": at(fi, f), "time_s": round(ts[f], 4) if f < len(ts) else None,
             "keyframe": f in keyframes, "anchors": at(columns["anchors_per_frame"], f),
             "anchor_cells": at(columns["cells_per_frame"], f), "kept": at(columns["kept_per_frame"], f),
             "merged": at(columns["merged_per_frame"], f)}
            for f in range(count)]
    return out


#: meta["video"] fields shown by :func:`picture_facts` (caches written before they were recorded
#: show None).
PICTURE_FIELDS = {"width": "int", "height": "int", "stored_width": "int", "stored_height": "int",
                  "sample_aspect_ratio": "str", "display_aspect_ratio": "str", "rotation": "int", "pix_fmt": "str"}
COLOUR_FIELDS = ("matrix", "range", "primaries", "transfer", "used_matrix", "used_range")


def picture_facts(video) -> dict:
    """The source's picture facts a cache recorded in ``meta["video"]``: displayed ``width`` x
    ``height``, ``stored_width`` x ``stored_height``, ``sample_aspect_ratio``,
    ``display_aspect_ratio``, ``rotation``, ``pix_fmt`` and ``colour`` (tagged ``matrix``,
    ``range``, ``primaries``, ``transfer``; ``used_matrix``/``used_range`` of the RGB conversion).
    Absent fields are None."""
    facts = {name: video.meta_value(f"video.{name}", kind) for name, kind in PICTURE_FIELDS.items()}
    facts["colour"] = {name: video.meta_value(f"video.colour.{name}", "str") for name in COLOUR_FIELDS}
    return facts


def cache_stats(cache: TokenCache, video: Optional[str] = None) -> dict:
    """Statistics of the whole cache (or of the one ``video``): ``path``, ``videos`` (see
    :func:`video_stats`), ``failures`` (videos whose latest attempt failed), ``unreadable``
    (``{"id", "error"}`` for each listed video whose entry is damaged: one line each; the others
    are still listed), ``skipped_rows`` (index lines that are not well-formed rows) with
    ``skipped_row_reasons`` (the first ones), ``missing_shards``, ``ignored`` (files inside the
    cache that were not used: links, FIFOs…) and ``totals``."""
    ids = [video] if video is not None else cache.ids()
    videos, unreadable = [], []
    for vid in ids:
        try:
            videos.append(video_stats(cache, vid))
        except CacheError as exc:
            unreadable.append({"id": vid, "error": " ".join(str(exc).split())})
    fails = [] if video is not None else [
        {"id": r.get("id"), "status": r.get("status"), "error": r.get("error"), "path": r.get("path")}
        for r in cache.failures()]
    return {"path": str(cache.path), "videos": videos, "failures": fails, "unreadable": unreadable,
            "skipped_rows": cache.skipped_lines, "skipped_row_reasons": list(cache.skipped_rows),
            "missing_shards": list(cache.missing_shards), "ignored": list(cache.ignored),
            "totals": {"videos": len(videos), "tokens": sum(v["tokens"] for v in videos),
                       "uncompressed": sum(v["uncompressed"] or 0 for v in videos), "failed": len(fails),
                       "unreadable": len(unreadable)}}


def problem_summary(stats: dict) -> Optional[str]:
    """One line saying what in the cache could not be used (None when everything could)."""
    parts = []
    listed = stats["totals"]["videos"] + stats["totals"]["unreadable"]
    if stats["unreadable"]:
        parts.append(f"{len(stats['unreadable'])} of {listed} video(s) could not be read")
    if stats["skipped_rows"]:
        parts.append(f"{stats['skipped_rows']} index row(s) skipped")
    if stats["missing_shards"]:
        parts.append(f"{len(stats['missing_shards'])} shard(s) named by the index missing")
    if stats["ignored"]:
        parts.append(f"{len(stats['ignored'])} file(s) ignored (links or special files)")
    return f"{stats['path']}: " + ", ".join(parts) if parts else None
