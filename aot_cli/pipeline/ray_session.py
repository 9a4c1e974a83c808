"""Connecting `aot compress --engine ray` to Ray for one run, and what the driver does while it
waits on Ray: :func:`ray_session` (a private local Ray, :mod:`.ray_local`, or ``--ray-address``'s
cluster; Ray's own messages as one-line notes, :mod:`.ray_messages`), :class:`RunSignals` (SIGINT / SIGTERM / SIGHUP
acted on between Ray calls), :class:`RayEngineError` and :func:`error_line` (Ray's exceptions in
one line)."""
from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Dict, Iterator, Optional

import ray

from .ray_messages import RayMessages


#: Seconds a HOST:PORT of ``--ray-address`` has to accept a connection before Ray is asked to join it.
CONNECT_TIMEOUT_S = 10.0


class RayEngineError(RuntimeError):
    """The ray engine cannot go on (an actor cannot load the model or write its part, every actor
    died, Ray cannot start): one line, exit 2."""


def error_line(exc: BaseException) -> str:
    """A Ray exception (or the exception it wraps) as ``Type: message`` on one line."""
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {' '.join(str(cause).split())[:400]}"


@contextmanager
def ray_session(engine, num_cpus: int, messages: Optional[RayMessages] = None) -> Iterator[Optional[object]]:
    """Connected to Ray for the run: ``engine.ray_address``'s cluster (left running), else a
    private local Ray (:class:`~.ray_local.PrivateRay`, ended on exit, whatever ends the run).
    Yields the private Ray (None when joining a cluster). RayEngineError when it fails. What Ray
    prints meanwhile goes to ``messages`` (:class:`~.ray_messages.RayMessages`; dropped when
    None), drained once more at the end; stdout keeps only this thread's lines."""
    from .ray_local import PrivateRay, RayStartError

    private = None
    handlers = _signal_handlers()
    messages = messages or RayMessages()
    messages.capture()
    try:
        if engine.ray_address is None:
            private = PrivateRay(num_cpus)
            try:
                private.start()
            except RayStartError as exc:
                raise RayEngineError(str(exc)) from None
            outer = os.environ.pop("RAY_ADDRESS", None)  # "auto" would prefer it to the private Ray
            try:
                ray.init(address="auto", _temp_dir=private.temp_dir, log_to_driver=False, logging_level=logging.ERROR)
            finally:
                if outer is not None:
                    os.environ["RAY_ADDRESS"] = outer
        else:
            check_reachable(engine.ray_address)
            try:
                ray.init(address=engine.ray_address, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                text = " ".join(str(exc).split())[:300]
                raise RayEngineError(f"--ray-address {engine.ray_address}: cannot join the Ray cluster ({text})") \
                    from None
        _restore(handlers)  # Ray's core worker replaces them (its SIGTERM handler aborts the process)
        yield private
    finally:
        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            messages.release()
            messages.drain()
            if private is not None:
                private.stop()


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """RayEngineError (one line) when nothing accepts a TCP connection at ``address``'s HOST:PORT
    (the cluster's GCS) within ``timeout_s`` seconds: ``ray.init`` would otherwise retry for
    minutes, printing Ray's C++ warnings. "auto" is left to Ray (it fails at once without a
    cluster)."""
    import socket

    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
        raise RayEngineError(f"--ray-address {address}: cannot join the Ray cluster (nothing answers there: {cause}; "
                             "start it with `ray start --head` or give the address it printed)") from None


class RunSignals:
    """SIGINT, SIGTERM and SIGHUP while the driver runs: recorded by the handler and raised by
    :meth:`check` between Ray calls (an exception raised by a handler inside Ray's compiled calls
    comes out as a SystemError), as KeyboardInterrupt or the command's ``Interrupted``. Once one
    was raised, later ones are ignored while the run stops (the stop's waits are bounded)."""

    WANTED = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.raised = False
        self.previous: Dict[int, object] = {}

    def __enter__(self) -> "RunSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.WANTED:
                self.previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        _restore(self.previous)

    def _record(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum

    def check(self) -> None:
        if self.received is None or self.raised:
            return
        self.raised = True
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt
        from .cli_support import Interrupted

        raise Interrupted(self.received)


def _signal_handlers() -> Dict[int, object]:
    """The Python handlers of the signals that end a run (SIGINT, SIGTERM, SIGHUP), to put back
    after ``ray.init`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    wanted = [signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)]
    return {s: signal.getsignal(s) for s in wanted if s is not None and signal.getsignal(s) is not None}


def _restore(handlers: Dict[int, object]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
