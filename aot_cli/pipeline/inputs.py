"""Turning command-line inputs into a list of videos with stable, unique ids."""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts",
                    ".mts", ".flv", ".wmv", ".3gp", ".ogv", ".mjpeg", ".mjpg", ".h264", ".264", ".hevc"}


class InputError(ValueError):
    """A bad input specification (missing file, unreadable list, duplicate id)."""


@dataclass
class VideoInput:
    path: Path
    video_id: str
    extra: Dict[str, object] = field(default_factory=dict)


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _norm_id(p: str) -> str:
    p = os.path.normpath(p).replace(os.sep, "/")
    while p.startswith("./"):
        p = p[2:]
    return p


def _file_id(spec: str) -> str:
    """Id of a file named directly: the path as given when relative; an absolute path inside the
    working directory becomes relative to it; any other absolute path keeps only its name."""
    p = Path(spec)
    if not p.is_absolute():
        return _norm_id(spec)
    try:
        return _norm_id(str(p.relative_to(Path.cwd())))
    except ValueError:
        return p.name


def _from_directory(d: Path) -> List[VideoInput]:
    out = []
    for root, dirs, files in os.walk(d):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            if p.suffix.lower() in VIDEO_EXTENSIONS and not name.startswith("."):
                out.append(VideoInput(p, _norm_id(os.path.relpath(p, d))))
    return out


def _read_lines(spec: str) -> List[str]:
    text = sys.stdin.read() if spec == "-" else Path(spec).read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def read_manifest(path: Path, path_column: str = "path") -> List[VideoInput]:
    """A CSV or JSONL manifest: one row per video, ``path_column`` names the file (relative paths
    are taken relative to the manifest); the other columns go into the video's metadata."""
    rows: List[dict] = []
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate the BOM spreadsheet programs write
    except OSError as e:
        raise InputError(f"{path}: cannot read manifest ({e.strerror or e})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    out = []
    for n, row in enumerate(rows, 1):
        if path_column not in row or not row[path_column]:
            raise InputError(f"{path}: row {n} has no '{path_column}' column")
        p = Path(str(row[path_column]))
        if not p.is_absolute():
            p = path.parent / p
        extra = {k: v for k, v in row.items() if k != path_column}
        vid = str(row.get("id") or row.get("video_id") or _norm_id(str(row[path_column])))
        out.append(VideoInput(p, vid, extra))
    return out


def expand_inputs(specs: Sequence[str], list_file: Optional[str] = None, manifest: Optional[str] = None,
                  path_column: str = "path", id_mode: str = "path") -> List[VideoInput]:
    """Files, directories (recursive, by extension), globs, a list file (``-`` = stdin) and a
    manifest, in that order, de-duplicated by resolved path. ``id_mode``: ``"path"`` (relative
    path: within a directory input, or as given for files) or ``"hash"`` (content sha256)."""
    items: List[VideoInput] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            items.extend(_from_directory(p))
        elif p.exists():
            items.append(VideoInput(p, _file_id(spec)))
        elif any(ch in spec for ch in "*?["):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise InputError(f"{spec}: the pattern matches no file")
            items.extend(VideoInput(Path(m), _file_id(m)) for m in matches if Path(m).is_file())
        else:
            raise InputError(f"{spec}: no such file or directory")
    if list_file is not None:
        try:
            lines = _read_lines(list_file)
        except OSError as e:
            raise InputError(f"{list_file}: cannot read list ({e.strerror or e})") from None
        items.extend(VideoInput(Path(ln), _file_id(ln)) for ln in lines)
    if manifest is not None:
        items.extend(read_manifest(Path(manifest), path_column))
    seen: Dict[Path, VideoInput] = {}
    for it in items:
        key = it.path.resolve()
        if key not in seen:
            seen[key] = it
    unique = list(seen.values())
    if id_mode == "hash":
        from ..video import file_sha256
        for it in unique:
            if not _regular_file(it.path):
                continue  # a pipe or device could block here; it is reported when processed
            try:
                it.video_id = file_sha256(it.path)
            except OSError:
                pass  # reported when the video is processed
    by_id: Dict[str, VideoInput] = {}
    for it in unique:
        if it.video_id in by_id and id_mode == "hash":
            continue  # the same content twice is one video
        if it.video_id in by_id:
            raise InputError(f"{it.path}: video id '{it.video_id}' is also the id of {by_id[it.video_id].path}; "
                             "pass the videos under one directory or use --id hash")
        by_id[it.video_id] = it
    return list(by_id.values())
