"""Turning command-line inputs into a list of videos with stable, unique ids.

Sources, in this order: files, directories (recursive, by extension), globs, a list file
(``--list``, one path per line, ``-`` = stdin) and a manifest (``--manifest``, CSV or JSONL).

Paths rule: a relative path is taken relative to where it is written. On the command line and in
a list read from stdin that is the working directory; inside a list file or a manifest it is the
directory holding that file (so a list or manifest kept next to its videos works from anywhere).

Ids: inside a directory input, the path relative to that directory; for a file named on the
command line, in a list or in a manifest, the path as written (normalised), except that an
absolute path inside the base directory above becomes relative to it and any other absolute path
keeps only its file name; a manifest's ``id`` / ``video_id`` column wins. ``--id hash`` uses the
content's sha256 instead.

Problems with one input never stop the others: a path that does not exist (in a list or
manifest), is not a regular file (a named pipe, a device, a socket), cannot be read, is a symlink
loop, has a name that is not valid UTF-8, or a directory that cannot be listed becomes one
failure (:class:`InputScan.failures`) that the run records, and the run goes on. Files in
directory inputs whose extension is not a video format are ignored and reported
(:class:`InputScan.ignored`). A list or manifest that cannot be used as a whole (unreadable, too
large, a row that is not a JSON object or lacks the path column) is an :class:`InputError`: the
command stops before doing anything (exit 2).
"""
from __future__ import annotations

import csv
import glob
import io
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import MAX_JSON_DEPTH
from ..safejson import loads as bounded_json
from ..video.formats import VIDEO_EXTENSIONS  # what a directory scan picks up (re-exported)

#: Largest list or manifest file read (bytes).
MAX_LIST_BYTES = 256 << 20
#: Names of ignored files kept for the run summary.
IGNORED_SHOWN = 5


class InputError(ValueError):
    """A bad input specification (missing file named on the command line, unusable list or
    manifest, duplicate id); one line starting with the path."""


@dataclass
class VideoInput:
    """One video: its ``path``, ``video_id`` and manifest ``extra`` columns. ``url``: the row as
    written when a list or manifest named a URL (refused as an unreadable input)."""

    path: Path
    video_id: str
    extra: Dict[str, object] = field(default_factory=dict)
    url: Optional[str] = None


@dataclass
class InputScan:
    """What :func:`scan_inputs` found: ``items`` to process; ``failures`` as (input, status,
    one-line error) for inputs that cannot be processed (status "unreadable"); ``ignored``:
    names of files in directory inputs without a video extension (the first
    :data:`IGNORED_SHOWN`) and ``ignored_count`` (all of them)."""

    items: List[VideoInput] = field(default_factory=list)
    failures: List[Tuple[VideoInput, str, str]] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    ignored_count: int = 0

    def ignore(self, name: str) -> None:
        self.ignored_count += 1
        if len(self.ignored) < IGNORED_SHOWN:
            self.ignored.append(escape_bytes(name))


_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(text: object) -> Optional[str]:
    """The scheme of ``text`` when it is a URL (``s3://``, ``gs://``, ``https://``, ``file://``,
    any ``scheme://``), else None. aot reads and writes local (or mounted) paths only."""
    match = _URL_RE.match(str(text))
    return match.group(1) if match else None


def url_refusal(text: str, what: str, subject: str = "") -> str:
    """The one-line refusal of URL ``text`` given as ``what`` ("an input", "the output"),
    starting with ``subject`` (default: the URL itself)."""
    return (f"{subject or escape_bytes(text)}: a URL ({url_scheme(text)}://) given as {what}; aot reads and writes "
            "local paths only (mount the bucket or share, or copy the files, and give that path)")


def escape_bytes(text: str) -> str:
    """``text`` with the undecodable bytes of a non-UTF-8 file name (surrogate escapes) written
    as ``\\xNN``, so it can be stored and printed."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _norm_id(p: str) -> str:
    p = os.path.normpath(p).replace(os.sep, "/")
    while p.startswith("./"):
        p = p[2:]
    return p


def _id_for(spec: str, base: Path) -> str:
    """Id of a path as written relative to ``base``: the path itself when relative; an absolute
    path inside ``base`` becomes relative to it; any other absolute path keeps only its name."""
    p = Path(spec)
    if not p.is_absolute():
        return _norm_id(spec)
    try:
        return _norm_id(str(p.relative_to(base)))
    except ValueError:
        return p.name


def _at(spec: str, base: Path) -> Path:
    p = Path(spec).expanduser()
    return p if p.is_absolute() else base / p


def _from_directory(d: Path, scan: InputScan) -> None:
    def unlistable(err: OSError) -> None:
        where = Path(err.filename) if err.filename else d
        rel = os.path.relpath(where, d)
        item = VideoInput(where, escape_bytes(d.name if rel == "." else _norm_id(rel)))
        scan.failures.append((item, "unreadable", f"{escape_bytes(str(where))}: cannot list directory "
                                                  f"({err.strerror or err})"))

    for root, dirs, files in os.walk(d, onerror=unlistable):
        kept = []
        for name in sorted(dirs):
            if os.path.islink(os.path.join(root, name)):
                scan.ignore(_norm_id(os.path.relpath(os.path.join(root, name), d)) + "/ (symlink, not followed)")
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            p = Path(root) / name
            rel = _norm_id(os.path.relpath(p, d))
            if p.suffix.lower() in VIDEO_EXTENSIONS and not name.startswith("."):
                scan.items.append(VideoInput(p, rel))
            else:
                scan.ignore(rel)


def _read_bounded(spec: str, what: str) -> str:
    """A list or manifest file's text (``-``: stdin), at most :data:`MAX_LIST_BYTES` bytes;
    undecodable bytes kept as surrogate escapes (file names may be any bytes)."""
    try:
        if spec == "-":
            raw = sys.stdin.buffer.read(MAX_LIST_BYTES + 1) if hasattr(sys.stdin, "buffer") else \
                sys.stdin.read(MAX_LIST_BYTES + 1).encode("utf-8", "surrogateescape")
        else:
            st = os.stat(spec)
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{spec}: cannot read {what} (not a regular file)")
            with open(spec, "rb") as handle:
                raw = handle.read(MAX_LIST_BYTES + 1)
    except OSError as e:
        raise InputError(f"{spec}: cannot read {what} ({e.strerror or e})") from None
    if len(raw) > MAX_LIST_BYTES:
        raise InputError(f"{spec}: {what} larger than {MAX_LIST_BYTES >> 20} MiB; split it")
    if raw.startswith(b"\xef\xbb\xbf"):  # the BOM spreadsheet programs write
        raw = raw[3:]
    return raw.decode("utf-8", "surrogateescape")


def _read_lines(spec: str) -> List[str]:
    text = _read_bounded(spec, "list")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def read_manifest(path: Path, path_column: str = "path") -> List[VideoInput]:
    """A CSV or JSONL manifest: one row per video, ``path_column`` names the file (relative
    paths are relative to the manifest's directory); the other columns go into the video's
    metadata. InputError (one line naming the file and row) for a manifest that cannot be used:
    unreadable, over :data:`MAX_LIST_BYTES`, a JSONL row that is not a JSON object (or nests
    more than :data:`~aot_cli.config.MAX_JSON_DEPTH` levels), a row without the path column."""
    text = _read_bounded(str(path), "manifest")
    rows: List[Tuple[int, dict]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if not _utf8(line):
                raise InputError(f"{path}:{n}: not UTF-8 text")
            try:
                row = bounded_json(line, MAX_JSON_DEPTH)
            except ValueError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({str(e).splitlines()[0]})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n}: a manifest row must be a JSON object with a '{path_column}' "
                                 f"key, got {type(row).__name__}")
            rows.append((n, row))
    else:
        if not _utf8(text):
            raise InputError(f"{path}: not UTF-8 text")
        try:
            rows = [(n, row) for n, row in enumerate(csv.DictReader(io.StringIO(text)), 2)]
        except csv.Error as e:
            raise InputError(f"{path}: not a readable CSV file ({e})") from None
    out = []
    base = path.parent if path.parent.is_absolute() else Path.cwd() / path.parent
    for n, row in rows:
        value = row.get(path_column)
        if not isinstance(value, str) or not value:
            raise InputError(f"{path}:{n}: row has no '{path_column}' (a file path)")
        extra = {k: v for k, v in row.items() if k != path_column and k is not None}
        vid = row.get("id") or row.get("video_id")
        if url_scheme(value):
            out.append(VideoInput(Path(value), str(vid) if vid not in (None, "") else value, extra, url=value))
            continue
        vid = str(vid) if vid not in (None, "") else _id_for(value, base)
        out.append(VideoInput(_at(value, base), vid, extra))
    return out


def _problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be read as a video file (one line), or None."""
    text = str(path)
    if not _utf8(text):
        return f"{escape_bytes(text)}: the file name is not valid UTF-8; rename the file"
    try:
        st = os.stat(text)
    except OSError as e:
        return f"{text}: cannot read ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return f"{text}: is a directory (name it on the command line to scan it)"
    if not stat.S_ISREG(st.st_mode):
        kind = ("a named pipe" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "special")
        return f"{text}: not a regular file ({kind})"
    if not os.access(text, os.R_OK):
        return f"{text}: cannot read (Permission denied)"
    return None


def _key(path: Path) -> str:
    """De-duplication key: the resolved path (the absolute path when it cannot be resolved)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return os.path.abspath(path)


def scan_inputs(specs: Sequence[str], list_file: Optional[str] = None, manifest: Optional[str] = None,
                path_column: str = "path", id_mode: str = "path") -> InputScan:
    """Files, directories (recursive, by extension), globs, a list file (``-`` = stdin) and a
    manifest, in that order, de-duplicated by resolved path, each checked (see the module
    docstring). ``id_mode``: ``"path"`` or ``"hash"`` (content sha256). Raises InputError for a
    missing file or empty glob on the command line, an unusable list or manifest, or two
    inputs with the same id."""
    scan = InputScan()
    cwd = Path.cwd()
    named: List[VideoInput] = []
    for spec in specs:
        if url_scheme(spec):
            raise InputError(url_refusal(spec, "an input"))
        p = Path(spec)
        if p.is_dir():
            _from_directory(p, scan)
        elif os.path.lexists(spec):
            scan.items.append(VideoInput(p, _id_for(spec, cwd)))
        elif any(ch in spec for ch in "*?["):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise InputError(f"{spec}: the pattern matches no file")
            scan.items.extend(VideoInput(Path(m), _id_for(m, cwd)) for m in matches if not os.path.isdir(m))
        else:
            raise InputError(f"{escape_bytes(spec)}: no such file or directory")
    if list_file is not None:
        base = cwd if list_file == "-" else Path(os.path.abspath(list_file)).parent
        named.extend(VideoInput(Path(ln), ln, url=ln) if url_scheme(ln)
                     else VideoInput(_at(ln, base), _id_for(ln, base)) for ln in _read_lines(list_file))
    if manifest is not None:
        named.extend(read_manifest(Path(manifest), path_column))
    seen: Dict[str, VideoInput] = {}
    for it in scan.items + named:
        seen.setdefault("url:" + it.url if it.url else _key(it.path), it)
    scan.items = []
    for it in seen.values():
        problem = url_refusal(it.url, "an input") if it.url else _problem(it.path)
        if problem is None:
            scan.items.append(it)
        else:
            it.video_id, it.path = escape_bytes(it.video_id), Path(escape_bytes(str(it.path)))
            scan.failures.append((it, "unreadable", problem))
    if id_mode == "hash":
        _hash_ids(scan)
    by_id: Dict[str, VideoInput] = {}
    for it in scan.items:
        if it.video_id in by_id and id_mode == "hash":
            continue  # the same content twice is one video
        if it.video_id in by_id:
            raise InputError(f"{it.path}: video id '{it.video_id}' is also the id of {by_id[it.video_id].path}; "
                             "pass the videos under one directory or use --id hash")
        by_id[it.video_id] = it
    scan.items = list(by_id.values())
    return scan


def _hash_ids(scan: InputScan) -> None:
    """``--id hash``: ids become content sha256s. A file that does not even open as a video
    keeps its path id (it fails when processed), so junk is never hashed in full."""
    from ..video import file_sha256
    from .workers import opens_as_video

    for it in scan.items:
        if not opens_as_video(str(it.path)):
            continue
        try:
            it.video_id = file_sha256(it.path)
        except OSError:
            pass  # reported when the video is processed


def expand_inputs(specs: Sequence[str], list_file: Optional[str] = None, manifest: Optional[str] = None,
                  path_column: str = "path", id_mode: str = "path") -> List[VideoInput]:
    """The videos :func:`scan_inputs` finds (failures and ignored files left out)."""
    return scan_inputs(specs, list_file, manifest, path_column, id_mode).items
