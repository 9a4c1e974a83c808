"""Runs `aot` with a fault-injection hook at one stage of a compress run, for the process tests.

    python tests/stage_driver.py STAGE CONTROL_DIR -- compress ARGS...

STAGE: ``none`` (no hook), ``start`` (before the decode workers start), ``model`` (while the model
loads, workers starting), ``tower`` (while the tower runs), ``commit`` (while a shard is
committed), ``committed`` (right after the first commit that held videos is durable). The hook writes ``CONTROL_DIR/reached`` and then holds the run there until the test
kills it, or raises :class:`InjectedFault` (an exception type the pipeline does not expect) once
``CONTROL_DIR/raise`` exists. ``added`` holds nothing: it appends a line to ``CONTROL_DIR/added``
each time a finished video is handed to the output (buffered, not yet committed). With ``--allow-pipes`` named pipes pass the input scanner (so a decode worker blocks
opening one: the ``decode`` stage is held that way by the test itself).

The hook polls its control file; that is the injected fault waiting, not the test's
synchronisation (the test waits for ``reached`` with a deadline).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


class InjectedFault(Exception):
    """The failure the hooks raise: not a RuntimeError/ValueError, so no stage treats it as a
    per-video problem."""


def hold(stage: str, control: Path) -> None:
    marker = control / "reached"
    tmp = control / ".reached.tmp"
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, marker)
    while not (control / "raise").exists():
        time.sleep(0.05)
    raise InjectedFault(f"injected failure at {stage}")


def install(stage: str, control: Path) -> None:
    if stage == "start":
        from aot_cli.pipeline import workers

        original = workers.DecodePool.start

        def start(self):
            hold(stage, control)
            return original(self)

        workers.DecodePool.start = start
    elif stage == "model":
        import aot_cli.models

        original = aot_cli.models.load_model

        def load_model(*args, **kwargs):
            hold(stage, control)
            return original(*args, **kwargs)

        aot_cli.models.load_model = load_model
    elif stage == "tower":
        from aot_cli.models.adapter import VisionAdapter

        original = VisionAdapter.encode

        def encode(self, *args, **kwargs):
            hold(stage, control)
            return original(self, *args, **kwargs)

        VisionAdapter.encode = encode
    elif stage == "commit":
        from aot_cli.cache import writer

        original = writer.CacheWriter.flush

        def flush(self, *args, **kwargs):
            if getattr(self, "_pending", True):  # a commit with something in it
                hold(stage, control)
            return original(self, *args, **kwargs)

        writer.CacheWriter.flush = flush
    elif stage == "committed":
        from aot_cli.cache import writer

        original = writer.CacheWriter.flush

        def flush(self, *args, **kwargs):
            held = bool(getattr(self, "_pending", None))
            result = original(self, *args, **kwargs)
            if held:
                hold(stage, control)
            return result

        writer.CacheWriter.flush = flush
    elif stage == "added":
        from aot_cli.pipeline import batch

        original = batch._Sink.add

        def add(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            with open(control / "added", "a") as handle:
                handle.write("1\n")
            return result

        batch._Sink.add = add
    elif stage != "none":
        raise SystemExit(f"unknown stage {stage}")


def main() -> None:
    stage, control = sys.argv[1], Path(sys.argv[2])
    rest = sys.argv[3:]
    if rest and rest[0] == "--allow-pipes":
        from aot_cli.pipeline import inputs

        original = inputs._problem
        inputs._problem = lambda path: None if Path(path).is_fifo() else original(path)
        rest = rest[1:]
    assert rest and rest[0] == "--", rest
    install(stage, control)
    from aot_cli.cli import main as aot

    aot(args=rest[1:], prog_name="aot")


if __name__ == "__main__":
    main()
