"""Bounded JSON for the cache: :mod:`aot_cli.safejson` (size, nesting and number limits checked
before and while parsing) with failures raised as one-line :class:`CacheError`."""
from __future__ import annotations

from typing import Any, Union

from ..safejson import MAX_DEPTH, MAX_INT_DIGITS, JSONLimitError, loads, nesting_exceeds  # noqa: F401
from .errors import CacheError


def load_or_fail(data: Union[bytes, bytearray, memoryview, str], where: object, what: str,
                 max_depth: int = MAX_DEPTH) -> Any:
    """:func:`loads`, with any failure raised as :class:`CacheError`
    ``"<where>: <what> is not valid JSON (<cause>)"`` or ``"<where>: <what> <limit>"``."""
    try:
        return loads(data, max_depth)
    except JSONLimitError as exc:
        raise CacheError(f"{where}: {what} {exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CacheError(f"{where}: {what} is not valid JSON ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:120] if text else type(exc).__name__
