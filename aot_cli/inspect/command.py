"""`aot inspect`: list a cache (table or JSON), draw pictures; the command line's whole behaviour.

Exit status (README "aot inspect"):

- ``0``: everything listed was read;
- ``1``: listed, but something in the cache could not be used: a video whose entry is damaged
  (one line each on stdout, in ``unreadable`` with ``--json``), index rows skipped, shards
  missing, files ignored (links, FIFOs); one summary line on stderr. Also ``--video`` naming a
  video that cannot be read;
- ``2``: the cache cannot be read at all (one line on stderr), ``--video`` names no video, or a
  picture cannot be made.

Nothing read from the cache reaches the terminal unescaped (:func:`.render.printable`); torch is
not imported unless a picture is drawn.
"""
from __future__ import annotations

import json
import sys
from typing import Optional

EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2


def _say(kind: str, message: str) -> None:
    from .render import printable

    print(f"aot: {kind}: {printable(' '.join(str(message).split()))}", file=sys.stderr)


def run_inspect(path: str, video_id: Optional[str] = None, as_json: bool = False, frames: Optional[bool] = None,
                overlay_png: Optional[str] = None, plot_png: Optional[str] = None, source: Optional[str] = None,
                cols: Optional[int] = None, cell_px: Optional[float] = None, width: Optional[int] = None) -> int:
    """Run `aot inspect` and return its exit status (see the module docstring)."""
    from ..cache import CacheError, TokenCache
    from .render import print_stats
    from .stats import cache_stats, problem_summary

    if plot_png:  # before anything is printed: a missing plotting library is a usage problem
        from .pictures import PictureError, require_matplotlib

        try:
            require_matplotlib()
        except PictureError as exc:
            _say("error", str(exc))
            return EXIT_UNREADABLE
    try:
        cache = TokenCache(path)
        if video_id is not None:
            video_id = cache.resolve(video_id)  # CacheError: one line, below
        elif overlay_png or plot_png:  # pictures show one video: ask for it before printing anything
            from .pictures import PictureError, resolve_video_id

            try:
                resolve_video_id(cache, None)
            except PictureError as exc:
                _say("error", str(exc))
                return EXIT_UNREADABLE
        stats = cache_stats(cache, video_id)
    except CacheError as exc:
        _say("error", str(exc))
        return EXIT_UNREADABLE
    except Exception as exc:  # noqa: BLE001 - a reader bug must still be one line, never a traceback
        _say("error", f"{path}: cannot read the cache ({type(exc).__name__}: {exc})")
        return EXIT_UNREADABLE
    if video_id is not None and stats["unreadable"]:
        if as_json:
            print(json.dumps(stats, indent=2))
        _say("error", stats["unreadable"][0]["error"])
        return EXIT_PROBLEMS
    if as_json:
        print(json.dumps(stats, indent=2))
    else:
        print_stats(stats, per_frame=frames if frames is not None else video_id is not None)
    summary = problem_summary(stats)
    if overlay_png or plot_png:
        code = _pictures(cache, video_id, overlay_png, plot_png, source, cols, cell_px, width)
        if code:
            return code
    if summary:
        where = "in the JSON" if as_json else "above"
        _say("warning", f"{summary} (details {where})")
        return EXIT_PROBLEMS
    return 0


def _pictures(cache, video_id, overlay_png, plot_png, source, cols, cell_px, width) -> int:
    from ..cache import CacheError
    from .pictures import PictureError, plot_tokens_per_frame, render_overlay
    from .render import printable

    try:
        if overlay_png:
            res = render_overlay(cache, video_id, overlay_png, video_path=source, cols=cols, cell_px=cell_px,
                                 width=width)
            print(f"wrote {printable(res.path)} ({res.size[0]}x{res.size[1]} px, {len(res.picture_boxes)} frames)",
                  file=sys.stderr)
        if plot_png:
            print(f"wrote {printable(plot_tokens_per_frame(cache, video_id, plot_png))}", file=sys.stderr)
    except (PictureError, CacheError) as exc:
        _say("error", str(exc))
        return EXIT_UNREADABLE
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        _say("error", f"{cache.path}: cannot draw the picture ({type(exc).__name__}: {exc})")
        return EXIT_UNREADABLE
    return 0
