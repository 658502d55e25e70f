"""Lazy package attributes (PEP 562): a package names its public objects and the modules that define them, and
each module is imported on first use, so that importing the package (e.g. to build a config) stays cheap."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def exports(package: str, public: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list]:
    """(`__getattr__`, `__dir__`, `__all__`) for `package` whose public name → defining module is `public`."""
    names = sorted(public)

    def getattr_(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}; public names: {', '.join(names)}")
        value = getattr(importlib.import_module(public[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return getattr_, dir_, names
