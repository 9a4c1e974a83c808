"""Why transformers cannot import a model class: a torchvision that is installed but does not
load beside the installed torch (a wheel built for another torch). transformers only checks that
torchvision is *installed*, then imports it with the vision-language model classes, so every such
class fails with an error that does not name torchvision. lmms-eval depends on torchvision, so
installing it next to a torch from another source (a local or nightly wheel) leads here."""
from __future__ import annotations

import importlib.util
from typing import Optional


def torchvision_problem() -> Optional[str]:
    """One sentence when torchvision is installed and fails to import (None when it imports or is
    absent). Imports torchvision, so call it only after an import failure."""
    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure to load is the diagnosis
        from importlib import metadata

        import torch

        try:
            version = metadata.version("torchvision")
        except metadata.PackageNotFoundError:
            version = "(unknown version)"
        cause = " ".join(str(exc).split())[:160] or type(exc).__name__
        return (f"torchvision {version} is installed but does not load beside torch {torch.__version__} "
                f"({type(exc).__name__}: {cause}), so transformers cannot import its vision-language "
                "model classes; uninstall it (pip uninstall -y torchvision) or install the torchvision "
                "build made for this torch")
    return None


def explain_import_failure(text: str, exc: BaseException) -> str:
    """``text`` (a one-line error about loading a model), with :func:`torchvision_problem`'s
    sentence appended when ``exc`` is an import-time failure and torchvision is the cause."""
    if isinstance(exc, (ImportError, RuntimeError, AttributeError)):
        problem = torchvision_problem()
        if problem is not None:
            return f"{text}: {problem}"
    return text
