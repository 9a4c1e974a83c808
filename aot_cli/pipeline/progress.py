"""Progress and results of a batch run: JSON lines on stdout (``--jsonl``), a rich progress bar
and a summary on stderr (the bar only when stderr is a terminal)."""
from __future__ import annotations

import json
import sys
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Receives one event per video (see :func:`aot_cli.pipeline.batch.run_batch`). ``jsonl``:
    write each event as one JSON line on stdout (flushed at once). ``quiet``: nothing on stderr.
    Use as a context manager around the run (starts and stops the bar)."""

    def __init__(self, total: int, jsonl: bool = False, quiet: bool = False):
        self.total = total
        self.jsonl = jsonl
        self.quiet = quiet
        self.console = Console(stderr=True, soft_wrap=True)  # one line per message, never wrapped
        self.progress: Optional[Progress] = None
        self.task = None
        self.last_ok: Optional[dict] = None

    def __enter__(self):
        if not self.quiet and sys.stderr.isatty():
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

    def event(self, e: dict) -> None:
        status = e.get("status")
        if status == "ok":
            self.last_ok = e
        if self.jsonl:
            sys.stdout.write(json.dumps(e) + "\n")
            sys.stdout.flush()
        if status not in ("ok", "skipped") and not self.quiet:
            self.console.print(f"[red]failed[/red] ({status}) {e.get('error')}", highlight=False, markup=True)
        if self.progress is not None:
            self.progress.advance(self.task)
            t = self.progress.tasks[0]
            if t.elapsed:
                self.progress.update(self.task, rate=f"{t.completed / t.elapsed:.2f} videos/s")

    def summary(self, s, out, rank) -> None:
        """One line: done / skipped / failed, tokens, bytes, time and rates (and, for a single
        video, its kept count and ratio)."""
        if self.quiet:
            return
        where = f"{out}" + (f" (part {rank.rank} of {rank.world}, {rank.source})" if rank.world > 1 else "")
        rate = (f", {s.done / s.seconds:.2f} videos/s, {s.frames / s.seconds:.1f} frames/s"
                if s.seconds > 0 and s.done else "")
        self.console.print(
            f"wrote {where}: {s.done} done, {s.skipped} skipped, {s.failed} failed; "
            f"{s.tokens} tokens, {s.bytes / 1e6:.2f} MB in {s.seconds:.1f} s{rate}", highlight=False)
        if s.failed and out.is_dir():
            self.console.print(f"failures are listed in {out / 'failures.jsonl'}", highlight=False)
        if s.done == 1 and self.last_ok is not None:
            e = self.last_ok
            self.console.print(f"kept {e['tokens']} tokens (planned {e['planned']}) from {e['frames']} frames: "
                               f"ratio {e['ratio']:.4f} of the {e['uncompressed']} the model would get", highlight=False)
