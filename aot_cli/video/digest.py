"""Content hashes of source files: the sha256 a cache records per video and compares on rerun.
Imports neither PyAV nor torch, so the resume check can hash without loading the decoder."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable, Optional, Union

#: Seconds between two ``progress()`` calls while a file is hashed (a decode worker's sign of
#: progress, so reading a large file is not mistaken for a hang); bytes per read.
PROGRESS_EVERY_S = 1.0
HASH_CHUNK = 1 << 22


def file_sha256(path: Union[str, Path], chunk_size: int = HASH_CHUNK,
                progress: Optional[Callable[[], None]] = None) -> str:
    """SHA-256 of a file's bytes as lowercase hex, read in ``chunk_size`` pieces, calling
    ``progress()`` about every :data:`PROGRESS_EVERY_S` seconds while reading. Raises OSError."""
    digest = hashlib.sha256()
    last = time.monotonic()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(chunk_size)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)
            if progress is not None and time.monotonic() - last >= PROGRESS_EVERY_S:
                progress()
                last = time.monotonic()
