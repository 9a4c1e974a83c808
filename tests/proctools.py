"""Finding every process of one run, including those re-parented after their parent died: the
run's environment carries a marker (``NAME=VALUE``) that all its processes inherit. Linux only
(reads /proc)."""
from __future__ import annotations

import os
from typing import List


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
