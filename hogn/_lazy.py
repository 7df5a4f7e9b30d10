"""Lazy package attributes (PEP 562), so that ``import hogn`` (``systems``, ``meta``)
costs next to nothing.

Most of the import time of this project is PyTorch Geometric (which imports
``torch._dynamo``, several seconds), pulled in by :mod:`hogn.graph` and everything
built on it. A package that uses :func:`attach` imports none of its submodules when
it is imported: each public name is imported from its submodule on first access
(``hogn.models``, ``hogn.rollout``, ``systems.get``), then bound on the package as
an ordinary attribute. ``from hogn import x``, ``import hogn.x``, ``dir(hogn)`` and
``from hogn import *`` behave as with eager imports.

One subtlety: where a submodule defines a public function of its own name
(``hogn.rollout.rollout``, ``hogn.train.train``, ``systems.generate.generate``), the
package attribute is the *function*, as it was with an eager
``from hogn.rollout import rollout``. The import system binds a submodule on its
package when it first loads it (whoever imports it); the package's class is swapped
for :class:`_Package`, which binds the function instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterable, Mapping

__all__ = ["attach"]


class _Package(types.ModuleType):
    """A package module that keeps the function ``f`` of its submodule ``f`` as the
    attribute ``f`` when the import system binds the submodule (see the module doc)."""

    def __setattr__(self, name: str, value: object) -> None:
        if (isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}"
                and name in self.__dict__.get("_functions_named_as_modules", ())):
            value = getattr(value, name)
        super().__setattr__(name, value)


def attach(package: str, attributes: Mapping[str, str], submodules: Iterable[str] = ()
           ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for a package with lazy attributes.

    Args:
        package: The package's ``__name__`` (already in ``sys.modules``).
        attributes: Public name -> submodule (relative name) that defines it.
        submodules: Submodules offered as attributes by name (any other submodule is
            found on access too: ``hogn.plot``).

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's ``__init__``.
    """
    module = sys.modules[package]
    attributes = dict(attributes)
    listed = sorted({*attributes, *submodules})
    same = frozenset(name for name, sub in attributes.items() if sub == name)
    if same:
        module._functions_named_as_modules = same
        module.__class__ = _Package

    def __getattr__(name: str) -> object:
        if name in attributes:
            value = getattr(importlib.import_module(f"{package}.{attributes[name]}"), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}"):
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*module.__dict__, *listed})

    return __getattr__, __dir__
