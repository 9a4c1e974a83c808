"""Rich tables for `aot inspect`."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table


def print_stats(stats: dict, per_frame: bool = False, console: Console = None) -> None:
    # Piped output is not squeezed to 80 columns: scripts and logs get whole ids.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    t = Table(title=f"{stats['path']}: {stats['totals']['videos']} video(s)")
    t.add_column("video", overflow="fold", min_width=12)
    for col in ("frames", "tokens", "planned", "of", "ratio", "key/kept/anchor", "newline", "clips"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("model", overflow="fold")
    for v in stats["videos"]:
        k = v["kinds"]
        t.add_row(v["id"], str(v["frames"]), str(v["tokens"]), str(v["planned"] if v["planned"] is not None else "-"),
                  str(v["uncompressed"]), f"{v['ratio']:.4f}" if v["ratio"] is not None else "-",
                  f"{k['keyframe']}/{k['kept']}/{k['anchor']}", str(v["newlines"]), str(len(v["clips"])),
                  str(v["model"]).rstrip("/").rsplit("/", 1)[-1])
    console.print(t)
    if per_frame:
        for v in stats["videos"]:
            ft = Table(title=f"{v['id']}: per frame (K = keyframe)")
            for col in ("frame", "source", "time s", "K", "anchors", "anchor cells", "kept", "merged"):
                ft.add_column(col, justify="right")
            for fr in v.get("per_frame", []):
                ft.add_row(str(fr["frame"]), str(fr["source_index"]), f"{fr['time_s']:.3f}" if fr["time_s"] is not None else "-",
                           "K" if fr["keyframe"] else "", str(fr["anchors"]), str(fr["anchor_cells"]),
                           str(fr["kept"]), str(fr["merged"]))
            console.print(ft)
            clips = ", ".join(f"{c['start']}-{c['start'] + c['length'] - 1}" for c in v["clips"])
            console.print(f"clips (frames): {clips}")
    if stats["failures"]:
        ft = Table(title="failures")
        for col in ("video", "status", "error"):
            ft.add_column(col)
        for f in stats["failures"]:
            ft.add_row(str(f["id"]), str(f["status"]), str(f["error"]))
        console.print(ft)
