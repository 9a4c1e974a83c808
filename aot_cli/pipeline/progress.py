"""Progress and results of a batch run: JSON lines on stdout (``--jsonl``), a rich progress bar
and a summary on stderr (the bar only when stderr is a terminal).

Everything printed for people goes through :func:`printable`: ids and paths come from file
names, lists and manifests, and may hold terminal escape sequences or newlines."""
from __future__ import annotations

import json
import sys
import unicodedata
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def printable(text: object) -> str:
    """``text`` safe for a terminal line: control and format characters (C0/C1 controls such as
    ESC and newline, DEL, bidirectional overrides) become ``\\xNN`` / ``\\uNNNN`` escapes, and
    the undecodable bytes of a non-UTF-8 file name ``\\xNN``; everything else, non-ASCII
    letters included, is kept."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogate escape of an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def error_line(message: object) -> str:
    """The one-line ``aot: error: ...`` form of ``message`` (escaped, whitespace collapsed)."""
    return "aot: error: " + printable(" ".join(str(message).split()))


def print_error(message: object) -> None:
    print(error_line(message), file=sys.stderr, flush=True)


class Reporter:
    """Receives one event per video (see :func:`aot_cli.pipeline.batch.run_batch`). ``jsonl``:
    write each event as one JSON line on stdout (flushed at once). ``quiet``: nothing on stderr.
    ``bar``: show the progress bar (default: when stderr is a terminal). Use as a context manager
    around the run (starts and stops the bar).

    The bar counts finished videos: a video counts once it is computed (:meth:`finished`, before
    it is committed), skipped or failed; its speed is in videos/s and frames/s. Commits happen
    every ``--flush-every`` seconds, so they are shown apart ("N committed")."""

    def __init__(self, total: int, jsonl: bool = False, quiet: bool = False, bar: Optional[bool] = None):
        self.total = total
        self.jsonl = jsonl
        self.quiet = quiet
        self.bar = (not quiet and sys.stderr.isatty()) if bar is None else bar
        self.console = Console(stderr=True, soft_wrap=True)  # one line per message, never wrapped
        self.progress: Optional[Progress] = None
        self.task = None
        self.last_ok: Optional[dict] = None
        self.counted: set = set()  # ids already counted as finished
        self.committed = 0
        self.frames = 0

    def __enter__(self):
        if self.bar:
            self.progress = Progress(TextColumn("[bold]compress"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("videos", total=self.total, rate="")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def say(self, text: str) -> None:
        """One line on stderr (unless quiet), already made printable by the caller."""
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False)

    def finished(self, e: dict) -> None:
        """A video is computed (``e``: its ``id`` and ``frames``); it is committed later."""
        self._count(e)

    def event(self, e: dict) -> None:
        status = e.get("status")
        if status == "ok":
            self.last_ok = e
            self.committed += 1
        if self.jsonl:
            sys.stdout.write(json.dumps(e) + "\n")  # JSON escapes control characters itself
            sys.stdout.flush()
        if status not in ("ok", "skipped") and not self.quiet:
            self.console.print(f"[red]failed[/red] ({escape(printable(status))}) {escape(printable(e.get('error')))}",
                               highlight=False, markup=True)
        self._count(e)

    def _count(self, e: dict) -> None:
        """Advance the bar once per video, whichever of its events comes first."""
        key = (e.get("id"), e.get("path"))
        first = key not in self.counted
        if first:
            self.counted.add(key)
            if e.get("status") != "skipped":
                self.frames += int(e.get("frames") or 0)
        if self.progress is None:
            return
        if first:
            self.progress.advance(self.task)
        t = self.progress.tasks[0]
        if t.elapsed:
            done = t.completed
            self.progress.update(self.task, rate=f"{done / t.elapsed:.2f} videos/s, {self.frames / t.elapsed:.1f} "
                                                 f"frames/s, {self.committed} committed")

    def summary(self, s, out, rank) -> None:
        """What happened, in one line: "wrote OUT: ..." only when videos were written; otherwise
        "nothing to do" (all cached already) or "no video written to OUT". Then, when they
        apply: where failures are listed, the files ignored in input directories, and for a
        single video its kept count and ratio."""
        if self.quiet:
            return
        where = printable(out) + (f" (part {rank.rank} of {rank.world}, {rank.source})" if rank.world > 1 else "")
        rate = (f", {s.done / s.seconds:.2f} videos/s, {s.frames / s.seconds:.1f} frames/s"
                if s.seconds > 0 and s.done else "")
        counts = f"{s.done} done, {s.skipped} skipped, {s.failed} failed"
        if s.done:
            self.say(f"wrote {where}: {counts}; {s.tokens} tokens, {s.bytes / 1e6:.2f} MB in {s.seconds:.1f} s{rate}")
        elif s.skipped and not s.failed:
            self.say(f"nothing to do: all {s.skipped} videos are already in {where} with the same content and "
                     f"configuration ({s.seconds:.1f} s; --overwrite recomputes them)")
        else:
            self.say(f"no video written to {where}: {counts} in {s.seconds:.1f} s")
        if s.failed and out.is_dir() and (out / "failures.jsonl").is_file():
            self.say(f"failures are listed in {printable(out / 'failures.jsonl')}")
        if s.ignored_count:
            shown = ", ".join(printable(n) for n in s.ignored)
            more = " ..." if s.ignored_count > len(s.ignored) else ""
            self.say(f"ignored {s.ignored_count} file(s) in input directories that are not videos by extension: "
                     f"{shown}{more}")
        if s.done == 1 and self.total == 1 and self.last_ok is not None:
            e = self.last_ok
            planned = f" (planned {e['planned']})" if e.get("planned") is not None else ""
            self.say(f"kept {e['tokens']} tokens{planned} from {e['frames']} frames: "
                     f"ratio {e['ratio']:.4f} of the {e['uncompressed']} the model would get")
