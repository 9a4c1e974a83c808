"""Decoder messages: FFmpeg (through PyAV) and decord write warnings for damaged or odd streams,
hundreds per file at times. They are hidden unless the user asks for them
(``DecodeConfig.decoder_log``), and then go to stderr prefixed with their source.

For PyAV's FFmpeg, ``quiet`` keeps PyAV's default of dropping every message; other levels put
FFmpeg's own stderr logger back at that level. decord carries its own FFmpeg build,
whose level is set through ``decord.logging``, and a C++ logger that writes straight to file
descriptor 2; :func:`decord_output` captures that descriptor while decord runs and forwards only
what the chosen level allows (lines that are not decoder output are passed through untouched).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import Iterator

LOG_LEVELS = ("quiet", "error", "warning", "info", "debug")
#: decord.logging levels (FFmpeg's numbers: quiet -8, error 16, warning 24, info 32, debug 48).
_DECORD_LEVELS = {"quiet": -8, "error": 16, "warning": 24, "info": 32, "debug": 48}
#: A line written by decord's C++ logger ("[09:15:41] src/video/video_reader.cc:270: ...") or by
#: FFmpeg's default log callback ("[h264 @ 0x55d0c7d2eb00] ...").
DECODER_LINE = re.compile(r"^\[(?:\d\d:\d\d:\d\d\] \S+:\d+:|[\w:,-]+ @ 0x[0-9a-fA-F]+\])")
_capture_lock = threading.Lock()


@contextlib.contextmanager
def decoder_logging(level: str) -> Iterator[None]:
    """While active, FFmpeg messages (via PyAV) at ``level`` or worse go to stderr, printed by
    FFmpeg's own log callback ("[h264 @ 0x...] ..."); "quiet" drops them all (PyAV's default).
    FFmpeg's C callback is used rather than PyAV's route through Python logging, which needs the
    GIL from FFmpeg's decoding threads and can deadlock a threaded decode. PyAV's previous
    setting is restored afterwards."""
    if level not in LOG_LEVELS:
        raise ValueError(f"decoder_log (--decoder-log) must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    import av  # here, not at the top: the flag checks read LOG_LEVELS without PyAV

    av_levels = {"error": av.logging.ERROR, "warning": av.logging.WARNING, "info": av.logging.INFO,
                 "debug": av.logging.DEBUG}
    previous = av.logging.get_level()
    if level == "quiet":
        av.logging.set_level(None)
    else:
        av.logging.restore_default_callback()
        av.logging.set_libav_level(av_levels[level])
    try:
        yield
    finally:
        av.logging.set_level(previous)


def _is_decoder_output(line: str) -> bool:
    return bool(DECODER_LINE.match(line)) or "DECORD" in line or "disable this warning" in line


@contextlib.contextmanager
def decord_output(level: str) -> Iterator[None]:
    """Run decord calls inside this: sets decord's FFmpeg log level and captures what its C++
    logger writes to file descriptor 2; on exit, decoder lines are written to stderr unless
    ``level`` is "quiet", other lines always. One capture at a time per process."""
    import decord

    decord.logging.set_level(_DECORD_LEVELS.get(level, -8))
    with _capture_lock:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):
            pass
        saved = os.dup(2)
        sink = tempfile.TemporaryFile()
        try:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            sink.close()
    if not text:
        return
    shown = [line for line in text.splitlines() if level != "quiet" or not _is_decoder_output(line)]
    if shown:
        try:
            sys.stderr.write("\n".join(shown) + "\n")
            sys.stderr.flush()
        except (AttributeError, ValueError):
            pass
