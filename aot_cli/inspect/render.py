"""Rich tables for `aot inspect`. Text that comes from a cache (ids, paths, model names, errors) is
printed through :func:`printable`, so a hostile id cannot send terminal escape sequences, move the
cursor or fake lines; JSON output stays exact."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` with every character that is not printable (C0/C1 controls such as ESC, CSI and
    BEL, DEL, bidirectional overrides and other format characters, line separators) replaced by
    a visible escape (``\\x1b``, ``\\n``, ``\\u202e``); printable text is unchanged."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _cell(value: object) -> Text:
    """A table cell holding ``value`` as plain text (no Rich markup is interpreted)."""
    return Text(printable(value))


def print_stats(stats: dict, per_frame: bool = False, console: Console = None) -> None:
    # Piped output is not squeezed to 80 columns: scripts and logs get whole ids.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    t = Table(title=Text(f"{printable(stats['path'])}: {stats['totals']['videos']} video(s)"))
    t.add_column("video", overflow="fold", min_width=12)
    for col in ("frames", "tokens", "planned", "of", "ratio", "key/kept/anchor", "newline", "clips"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("model", overflow="fold")
    t.add_column("picture (SAR)", overflow="fold")
    t.add_column("colour (tagged -> used)", overflow="fold")
    for v in stats["videos"]:
        k = v["kinds"]
        picture = v.get("picture") or {}
        t.add_row(_cell(v["id"]), str(v["frames"]), str(v["tokens"]),
                  str(v["planned"] if v["planned"] is not None else "-"), str(v["uncompressed"]),
                  f"{v['ratio']:.4f}" if v["ratio"] is not None else "-",
                  f"{k['keyframe']}/{k['kept']}/{k['anchor']}", str(v["newlines"]), str(len(v["clips"])),
                  _cell(str(v["model"]).rstrip("/").rsplit("/", 1)[-1]), _cell(geometry_text(picture)),
                  _cell(colour_text(picture.get("colour") or {})))
    console.print(t)
    if per_frame:
        for v in stats["videos"]:
            ft = Table(title=Text(f"{printable(v['id'])}: per frame (K = keyframe)"))
            for col in ("frame", "source", "time s", "K", "anchors", "anchor cells", "kept", "merged"):
                ft.add_column(col, justify="right")
            for fr in v.get("per_frame", []):
                ft.add_row(str(fr["frame"]), str(fr["source_index"]),
                           f"{fr['time_s']:.3f}" if fr["time_s"] is not None else "-",
                           "K" if fr["keyframe"] else "", str(fr["anchors"]), str(fr["anchor_cells"]),
                           str(fr["kept"]), str(fr["merged"]))
            console.print(ft)
            clips = ", ".join(f"{c['start']}-{c['start'] + c['length'] - 1}" for c in v["clips"])
            console.print(Text(f"clips (frames): {clips}"))
    if stats["failures"]:
        ft = Table(title="failures")
        for col in ("video", "status", "error"):
            ft.add_column(col)
        for f in stats["failures"]:
            ft.add_row(_cell(f["id"]), _cell(f["status"]), _cell(f["error"]))
        console.print(ft)
    print_unreadable(stats, console)


def geometry_text(picture: dict) -> str:
    """``"853x480 (stored 720x480, SAR 32:27, DAR 16:9)"``, ``"640x272 (SAR 1:1)"``; "-" when not recorded."""
    if picture.get("width") is None or picture.get("height") is None:
        return "-"
    text = f"{picture['width']}x{picture['height']}"
    stored = (picture.get("stored_width"), picture.get("stored_height"))
    extra = []
    if None not in stored and stored != (picture["width"], picture["height"]):
        extra.append(f"stored {stored[0]}x{stored[1]}")
    if picture.get("sample_aspect_ratio"):
        extra.append(f"SAR {picture['sample_aspect_ratio']}")
        if picture["sample_aspect_ratio"] != "1:1" and picture.get("display_aspect_ratio"):
            extra.append(f"DAR {picture['display_aspect_ratio']}")
    if picture.get("rotation"):
        extra.append(f"turned {picture['rotation']}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def colour_text(colour: dict) -> str:
    """``"bt709/tv -> bt709/tv"`` (tagged matrix/range -> the conversion used); "-" when not
    recorded, "rgb" for pictures that needed no YUV conversion."""
    if not colour or colour.get("matrix") is None:
        return "-"
    used = f"{colour.get('used_matrix')}/{colour.get('used_range')}" if colour.get("used_matrix") else "rgb"
    return f"{colour['matrix']}/{colour.get('range')} -> {used}"


def print_unreadable(stats: dict, console: Console) -> None:
    """One line per listed video that could not be read, then one per other problem (skipped
    index rows, missing shards, ignored files), each escaped with :func:`printable`."""
    lines = [f"unreadable: {u['error']}" for u in stats.get("unreadable", [])]
    lines += [f"skipped index row: {reason}" for reason in stats.get("skipped_row_reasons", [])]
    hidden = stats.get("skipped_rows", 0) - len(stats.get("skipped_row_reasons", []))
    if hidden > 0:
        lines.append(f"skipped index rows: {hidden} more")
    lines += [f"missing shard: {name}" for name in stats.get("missing_shards", [])]
    lines += [f"ignored: {note}" for note in stats.get("ignored", [])]
    for line in lines:
        console.print(Text(printable(line)), soft_wrap=True)
