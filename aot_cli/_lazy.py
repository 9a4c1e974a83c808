"""Lazy package exports (PEP 562): a package lists which submodule defines each public name, and
the submodule is imported on first access. Keeps ``import aot_cli.<package>`` free of torch,
transformers and PyAV until a name that needs them is used, so flag checks, ``--help`` and cache
reruns start fast."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Dict, Tuple, Union


def lazy_exports(package: str, exports: Dict[str, Union[str, Tuple[str, str]]]) -> None:
    """Make the public names of ``package`` (its ``__name__``; call this from its ``__init__``)
    load on first access: ``exports`` maps each name to the submodule defining it (relative,
    e.g. ``"compress"``), or to ``(submodule, attribute)`` for a name exported under another
    one (``"MethodConfig": ("core", "AOTConfig")``). A submodule named like one of its functions
    (``compress.compress``) never shadows the function once loaded, as with an eager
    ``from .compress import compress``;
    other submodules are reachable as attributes (``aot_cli.core.pool``), imported on first access.
    Unknown names raise AttributeError as usual."""

    class LazyPackage(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            spec = exports.get(name)
            if spec is None:
                if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
                    return importlib.import_module(f"{package}.{name}")  # binds itself on the package
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            module, attribute = (spec, name) if isinstance(spec, str) else spec
            value = getattr(importlib.import_module(f"{package}.{module}"), attribute)
            types.ModuleType.__setattr__(self, name, value)  # later look-ups skip this method
            return value

        def __setattr__(self, name: str, value: object) -> None:
            if name in exports and isinstance(value, types.ModuleType) and value.__name__ == f"{package}.{name}":
                return  # the import system binding submodule `name`: keep the public function
            types.ModuleType.__setattr__(self, name, value)

        def __dir__(self):
            return sorted(set(self.__dict__) | set(exports))

    sys.modules[package].__class__ = LazyPackage
