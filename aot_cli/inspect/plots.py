"""Plots (matplotlib, the optional ``viz`` extra, imported only when a plot is made): tokens per
frame of one cached video (:func:`plot_tokens_per_frame`) and a ratio sweep
(:func:`plot_ratio_sweep`; see :mod:`aot_cli.inspect.sweep`)."""
from __future__ import annotations

import importlib
import io
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..cache import TokenCache
from .marks import MAX_PLOT_FRAMES, marked_video
from .output import PictureError, _write_picture
from .palette import ANCHOR_COLOR, KEPT_COLOR, KEYFRAME_COLOR, RGB


def require_matplotlib():
    """The matplotlib module, imported now; PictureError (one line) when it is not installed."""
    try:
        import matplotlib

        importlib.import_module("matplotlib.backends.backend_agg")
    except ImportError:
        raise PictureError("matplotlib is not installed: plots need it (pip install 'aot-cli[viz]' or pip install matplotlib)") from None
    return matplotlib


def _new_figure(width_in: float, height_in: float):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global figure state)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, out_png: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return _write_picture(buffer.getvalue(), out_png)


def _rgb(colour: RGB) -> Tuple[float, float, float]:
    return tuple(c / 255 for c in colour)  # type: ignore[return-value]


def plot_tokens_per_frame(cache: TokenCache | str | Path, video_id: Optional[str], out_png: str | Path) -> Path:
    """Bar chart of the tokens each sampled frame contributes, against time: stacked by kind
    (raw keyframe tokens, merged anchors, kept tokens), keyframes marked "K", clip boundaries
    as dotted vertical lines, the mean per frame as a dashed line. Written atomically to
    ``out_png``. Needs only the cache (and matplotlib). Returns the path."""
    require_matplotlib()
    cache, vid, video, marks, info = marked_video(cache, video_id, MAX_PLOT_FRAMES)
    times = np.array([m.time_s for m in marks], dtype=np.float64)
    use_time = len(times) > 1 and bool(np.isfinite(times).all()) and bool(np.all(np.diff(times) > 0))
    x = times if use_time else np.arange(len(marks), dtype=np.float64)
    step = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
    raw = np.array([len(m.raw) for m in marks])
    anchors = np.array([len(m.anchors) for m in marks])
    kept = np.array([len(m.kept) for m in marks])
    fig = _new_figure(min(16.0, max(7.0, 0.28 * len(marks) + 4)), 4.2)
    ax = fig.add_subplot()
    width = 0.8 * step
    for values, bottom, colour, label in ((raw, 0, KEYFRAME_COLOR, "raw keyframe tokens"),
                                          (anchors, raw, ANCHOR_COLOR, "merged anchors (of the clip)"),
                                          (kept, raw + anchors, KEPT_COLOR, "kept tokens")):
        if values.any():
            ax.bar(x, values, width, bottom=bottom, color=_rgb(colour), label=label)
    totals = raw + anchors + kept
    merged = np.array([len(m.merged) for m in marks])
    if merged.any():
        ax.bar(x, merged, width, bottom=totals, fill=False, hatch="///", edgecolor=_rgb(ANCHOR_COLOR), linewidth=0,
               label="merged into the anchors\n(not in the output)")
    top = max(1, int((totals + merged).max()))
    for m, xi, t in zip(marks, x, totals + merged):
        if m.keyframe:
            ax.text(xi, t + 0.02 * top, "K", ha="center", va="bottom", fontsize=9, fontweight="bold",
                    color=_rgb(KEYFRAME_COLOR))
    starts = [m.frame for m in marks if m.keyframe and m.frame > 0]
    for i, f in enumerate(starts):
        ax.axvline((x[f - 1] + x[f]) / 2, color="0.35", linestyle=":", linewidth=1,
                   label="clip boundary" if i == 0 else None)
    mean = totals.mean() if len(totals) else 0.0
    ax.axhline(mean, color="0.2", linestyle="--", linewidth=1, label=f"mean {mean:.1f} per frame")
    ax.set_xlim(x[0] - step, x[-1] + step)
    ax.set_ylim(0, top * 1.15)
    ax.set_xlabel("time in the video (s)" if use_time else "sampled frame")
    ax.set_ylabel("tokens in the output")
    ratio = f"ratio {info.ratio:.4f}" if info.ratio is not None else ""
    ax.set_title(f"{vid}: {info.achieved} of {info.uncompressed} tokens ({ratio})\n"
                 f"uncompressed: {info.grid[0]}x{info.grid[1]} = {info.grid[0] * info.grid[1]} per frame", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return _save_figure(fig, out_png)


#: One colour per sweep method (docs/method.md §10); the configured method keeps the kept-token colour.
SWEEP_COLORS = {"aot": KEPT_COLOR, "quality": (40, 160, 70), "random": (130, 130, 130), "pool": (90, 90, 220),
                "attention": (220, 120, 30)}
REFERENCE_MARKERS = ("*", "D", "P", "X")


def plot_ratio_sweep(points: Sequence[Any], out_png: str | Path, title: Optional[str] = None) -> Path:
    """A sweep (:class:`aot_cli.inspect.sweep.SweepPoint` list) as a PNG.

    First panel: requested vs achieved retention, one line per method (exact budgets, with the
    identity line) and the reference-rule points (V, keep ratio) as horizontal lines at the
    retention they reached. When the points carry fidelity figures, three more panels plot
    coverage, salient coverage and OT error against the achieved ratio, one line per method, the
    reference points as stars. Points with an error are listed in the figure's footnote. Written
    atomically to ``out_png``; returns the path."""
    require_matplotlib()
    ratio_pts = [p for p in points if p.rule == "ratio" and p.error is None]
    ref_pts = [p for p in points if p.rule == "reference" and p.error is None]
    failed = [p for p in points if p.error is not None]
    if not ratio_pts and not ref_pts:
        raise PictureError(f"{out_png}: nothing to plot: every sweep point failed")
    methods = list(dict.fromkeys(getattr(p, "method", "aot") for p in ratio_pts))
    by_method = {m: sorted((p for p in ratio_pts if getattr(p, "method", "aot") == m), key=lambda p: p.requested)
                 for m in methods}
    has_fidelity = any(getattr(p, "coverage", None) is not None for p in ratio_pts + ref_pts)
    fig = _new_figure(12.0, 9.0) if has_fidelity else _new_figure(6.4, 5.0)
    ax = fig.add_subplot(2, 2, 1) if has_fidelity else fig.add_subplot()
    values = [p.requested for p in ratio_pts] + [p.achieved_ratio for p in ratio_pts + ref_pts]
    hi = max(values) * 1.15
    ax.plot([0, hi], [0, hi], color="0.6", linestyle="--", linewidth=1, label="achieved = requested")
    styles = ["-.", ":", (0, (5, 2, 1, 2))]
    for m in methods:
        pts = by_method[m]
        colour = _rgb(SWEEP_COLORS.get(m, KEPT_COLOR))
        label = "--ratio (exact budget)" if methods == ["aot"] else f"{m} (exact budget)"
        ax.plot([p.requested for p in pts], [p.achieved_ratio for p in pts], "o-", color=colour,
                markeredgecolor="0.2", label=label)
        if m == methods[0]:
            for p in pts:
                ax.annotate(f"{p.achieved} tok", (p.requested, p.achieved_ratio), textcoords="offset points",
                            xytext=(6, -12), fontsize=8, color="0.25")
    for i, p in enumerate(ref_pts):
        ax.axhline(p.achieved_ratio, color=_rgb(ANCHOR_COLOR), linestyle=styles[i % len(styles)], linewidth=1.4,
                   label=f"reference {p.label}: {p.achieved_ratio:.3f} ({p.achieved} tok)")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("requested ratio (--ratio)")
    ax.set_ylabel("achieved ratio (tokens kept / uncompressed)")
    ax.set_title("retention: requested vs achieved" if has_fidelity else (title or "retention: requested vs achieved"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    if has_fidelity:
        panels = (("coverage", "coverage (mean max cosine, all tokens)"),
                  ("salient_coverage", "salient coverage (top 10 % attention)"),
                  ("ot_error", "OT error (exact EMD, cost 1 - cos; lower is better)"))
        for k, (attr, name) in enumerate(panels, start=2):
            axf = fig.add_subplot(2, 2, k)
            for m in methods:
                pts = [p for p in by_method[m] if getattr(p, attr, None) is not None]
                if pts:
                    axf.plot([p.achieved_ratio for p in pts], [getattr(p, attr) for p in pts], "o-",
                             color=_rgb(SWEEP_COLORS.get(m, KEPT_COLOR)), markeredgecolor="0.2", label=m)
            for i, p in enumerate(ref_pts):
                if getattr(p, attr, None) is not None:
                    axf.plot([p.achieved_ratio], [getattr(p, attr)], marker=REFERENCE_MARKERS[i % len(REFERENCE_MARKERS)],
                             markersize=10, linestyle="none", color=_rgb(ANCHOR_COLOR), markeredgecolor="0.2",
                             label=f"reference {p.label}")
            axf.set_xlabel("achieved ratio")
            axf.set_title(name, fontsize=10)
            axf.grid(alpha=0.3)
            if k == 2:  # one legend for the three fidelity panels
                axf.legend(loc="best", fontsize=7)
        if title:
            fig.suptitle(title, fontsize=10)
    if failed:
        fig.text(0.01, 0.005, "not met: " + "; ".join(f"{getattr(p, 'method', 'aot')} {p.label}" for p in failed),
                 fontsize=7, color="0.35")
    return _save_figure(fig, out_png)
