"""Packages whose public names are loaded from their modules on first use (PEP 562).

A package lists where each public name lives (``{"compact": "compact", "Store": "_db"}``) and
calls :func:`install` at its end: importing the package then imports none of its modules, and
``package.name`` (or ``from package import name``) imports the one module that defines it.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Loading the submodule compact.py (say) makes the import system set the package's
        # attribute of that name to the module; where the public name is the function, keep it.
        modules: Mapping[str, str] = self.__dict__.get("_MODULES", {})
        if isinstance(value, types.ModuleType) and modules.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


def install(name: str, modules: Mapping[str, str]) -> None:
    """Make the package ``name`` load each public name of ``modules`` (name -> the module of
    the package that defines it) when first asked for."""
    package = sys.modules[name]
    namespace = vars(package)

    def __getattr__(attribute: str) -> Any:  # noqa: N807 - the module protocol's name
        module = modules.get(attribute)
        if module is None:
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        value = getattr(importlib.import_module(f"{name}.{module}"), attribute)
        namespace[attribute] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the module protocol's name
        return sorted({*namespace, *namespace.get("__all__", ())})

    namespace["_MODULES"] = modules
    namespace["__getattr__"] = __getattr__
    namespace["__dir__"] = __dir__
    package.__class__ = _Package
