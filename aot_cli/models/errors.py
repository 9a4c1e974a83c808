"""The one exception type the model layer raises for bad input (missing or unsupported
checkpoints, bad options). Its message is a single line naming the file or model and the cause."""
from __future__ import annotations


class ModelLoadError(Exception):
    """A model could not be resolved, recognised or loaded; ``str(err)`` is one line."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
