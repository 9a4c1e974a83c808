"""Writing pictures: the one error pictures raise, and atomic PNG writes."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from ..cache import atomic_write_bytes


class PictureError(RuntimeError):
    """A picture cannot be made. The message is one line that starts with the file concerned."""


def one_line(text: object) -> str:
    """``text`` with all whitespace runs (newlines included) turned into single spaces."""
    return " ".join(str(text).split())


def _write_picture(data: bytes, out_png: str | Path) -> Path:
    """Write encoded picture bytes at ``out_png`` atomically (temporary file, fsync, rename),
    creating its folder; PictureError (one line) when the folder cannot be made."""
    out = Path(out_png)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PictureError(f"{out}: cannot create its folder ({exc.strerror or exc})") from None
    atomic_write_bytes(out, data)
    return out


def write_png(image: Image.Image, out_png: str | Path) -> Path:
    """Save ``image`` as PNG at ``out_png`` atomically (temporary file, fsync, rename)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return _write_picture(buffer.getvalue(), out_png)
