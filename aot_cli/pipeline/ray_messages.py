"""What Ray prints in the command's process while `aot compress --engine ray` is connected, as aot's
own one-line notes.

Ray's driver prints messages of its own from background threads: the raylet's error messages
("A worker died or was killed while executing a task by an unexpected system error. ... Worker
PID: 123 ... Worker exit type: SYSTEM_ERROR ...", a whole paragraph on one line, in colour; "Task
_decode_task failed. ... Error:" followed by a traceback) on ``sys.stdout``, and records of the
``ray`` logger (unhandled errors of dropped object refs, with tracebacks) on ``sys.stderr``.
While connected, :class:`RayMessages` takes both instead: each message becomes at most one line
(:func:`ray_note`), kept until the driver's thread hands it to the run's ``note`` (which prints
nothing under ``-q``). So ``-q`` leaves only aot's errors on stderr, stdout only the ``--jsonl``
lines, and without ``-q`` Ray's messages are short notes such as
``Ray: a worker died (pid 123, SYSTEM_ERROR: Worker unexpectedly exits with a connection error code 2.)``.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
from collections import deque
from typing import Callable, List, Optional

#: Longest note made of one of Ray's messages (characters after "Ray: ").
NOTE_CHARS = 200

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Ray's prefix of a message: "(raylet)", "(pid=12)", "(VideoActor pid=12, ip=10.0.0.2)".
_PREFIX = re.compile(r"^\((?:raylet|autoscaler[^)]*|[^()]*pid=[^()]*)\)\s*")
_WORKER_DIED = re.compile(r"Worker PID: (\d+).*?Worker exit type: (\w+)(?: Worker exit detail: (.+?[.!?])(?:\s|$))?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def ray_note(message: str) -> Optional[str]:
    """One of Ray's messages as one line: its first non-empty line, colours and Ray's
    ``(raylet)`` / ``(... pid=N)`` prefix removed, whitespace collapsed; a worker's death as
    ``Ray: a worker died (pid N, EXIT_TYPE: first sentence of the detail)``; anything else as
    ``Ray: `` and its leading sentences up to :data:`NOTE_CHARS` characters. None when nothing
    is left (blank lines, bare colour codes)."""
    lines = [" ".join(_ANSI.sub("", line).split()) for line in str(message).splitlines()]
    line = next((text for text in lines if text), "")
    line = _PREFIX.sub("", line).strip()
    if not line:
        return None
    died = _WORKER_DIED.search(line)
    if line.startswith("A worker died") and died:
        detail = f": {died.group(3)}" if died.group(3) else ""
        return f"Ray: a worker died (pid {died.group(1)}, {died.group(2)}{detail})"
    kept = ""
    for sentence in _SENTENCE_END.split(line):
        if sentence.endswith(":") and kept:  # "... Error:" announcing the lines dropped above
            break
        if kept and len(kept) + 1 + len(sentence) > NOTE_CHARS:
            break
        kept = f"{kept} {sentence}" if kept else sentence
    if len(kept) > NOTE_CHARS:
        kept = kept[: NOTE_CHARS - 3].rstrip() + "..."
    return f"Ray: {kept}"


class RayMessages:
    """Ray's messages while connected (see the module docstring), from any thread, handed one
    line each to ``note`` by :meth:`drain` on the driver's thread (consecutive repeats once).
    :meth:`capture` installs the stdout wrapper and the logger handler; :meth:`release` puts
    back what was there."""

    def __init__(self, note: Optional[Callable[[str], None]] = None) -> None:
        self.note = note or (lambda line: None)
        self._pending: deque = deque()
        self._last: Optional[str] = None
        self._stdout = None
        self._handler: Optional[logging.Handler] = None
        self._logger_state = None

    def add(self, message: str) -> None:
        """Keep ``message`` (any thread) as a note for the next :meth:`drain`."""
        line = ray_note(message)
        if line is not None:
            self._pending.append(line)

    def drain(self) -> None:
        """Hand the kept notes to ``note`` (call it from the driver's thread)."""
        while self._pending:
            line = self._pending.popleft()
            if line != self._last:
                self._last = line
                self.note(line)

    def capture(self) -> None:
        """From now on, what other threads write to ``sys.stdout`` and what the ``ray`` logger
        records become notes; this thread's stdout stays stdout (the ``--jsonl`` lines)."""
        self._stdout = sys.stdout
        sys.stdout = _OwnStdout(self._stdout, self)
        logger = logging.getLogger("ray")
        self._logger_state = (list(logger.handlers), logger.propagate)
        self._handler = _NoteHandler(self)
        for handler in self._logger_state[0]:
            logger.removeHandler(handler)
        logger.addHandler(self._handler)
        logger.propagate = False

    def release(self) -> None:
        """Undo :meth:`capture` (what is kept stays until :meth:`drain`)."""
        if self._stdout is not None:
            sys.stdout, self._stdout = self._stdout, None
        if self._handler is not None:
            logger = logging.getLogger("ray")
            logger.removeHandler(self._handler)
            handlers, propagate = self._logger_state
            for handler in handlers:
                logger.addHandler(handler)
            logger.propagate = propagate
            self._handler = None


class _OwnStdout:
    """``sys.stdout`` while connected: what the owning thread writes goes to stdout; what other
    threads (Ray's) write becomes a message of ``messages``, one per write (``print`` writes a
    message in one call, its newline in another)."""

    def __init__(self, out, messages: RayMessages) -> None:
        self._out, self._messages, self._owner = out, messages, threading.current_thread()

    def write(self, text: str) -> int:
        if threading.current_thread() is self._owner:
            return self._out.write(text)
        self._messages.add(text)
        return len(text)

    def flush(self) -> None:
        if threading.current_thread() is self._owner:
            self._out.flush()

    def __getattr__(self, name: str):
        return getattr(self._out, name)


class _NoteHandler(logging.Handler):
    """The ``ray`` logger's records as messages (their text only, without tracebacks)."""

    def __init__(self, messages: RayMessages) -> None:
        super().__init__()
        self._messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._messages.add(record.getMessage())
        except Exception:  # noqa: BLE001 - a message that cannot be formatted is dropped
            pass


__all__: List[str] = ["NOTE_CHARS", "RayMessages", "ray_note"]
