"""Finding every process of one run, including those re-parented after their parent died: the
run's environment carries a marker (``NAME=VALUE``) that all its processes inherit. Linux only
(reads /proc)."""
from __future__ import annotations

import os
import time
from typing import Callable, List


def marked(name: str, value: str) -> List[int]:
    """Live (not zombie) processes whose environment holds ``name=value``."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` (every 50 ms) until it is true; AssertionError naming ``what`` after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(0.05)
