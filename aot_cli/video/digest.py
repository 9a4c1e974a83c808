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


class BackgroundSha256:
    """:func:`file_sha256` of ``path`` computed in a thread while the caller decodes (hashing
    reads the file and ``hashlib`` releases the GIL, so the two overlap on a multi-core machine).
    :meth:`result` waits for it; :meth:`cancel` stops it at the next chunk (a decode that failed)."""

    def __init__(self, path: Union[str, Path], chunk_size: int = HASH_CHUNK) -> None:
        import threading

        self.path, self.chunk_size = path, chunk_size
        self.cancelled = False
        self.digest: Optional[str] = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="aot-sha256", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            digest = hashlib.sha256()
            with open(self.path, "rb") as handle:
                while not self.cancelled:
                    chunk = handle.read(self.chunk_size)
                    if not chunk:
                        self.digest = digest.hexdigest()
                        return
                    digest.update(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self.error = exc

    def result(self) -> str:
        """The hex digest (waits for the thread); raises the OSError hashing met."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.digest is None:
            raise RuntimeError(f"hashing {self.path} was cancelled")
        return self.digest

    def cancel(self) -> None:
        """Stop hashing (returns at once; the thread ends after its current chunk)."""
        self.cancelled = True
