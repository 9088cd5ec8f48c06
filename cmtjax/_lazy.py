"""Lazy package exports: ``import cmtjax`` (and ``cmtjax --help``) without importing jax.

A package lists what it exports and from which submodule; a name is imported the first time
it is read (PEP 562 module ``__getattr__``). Where an exported name is also a submodule's
name (``cmtjax.targets.gmm`` the function, ``cmtjax/targets/gmm.py`` the module), importing
the submodule must not replace the export on the package: :func:`lazy_exports` gives the
package a module class that keeps the export (the submodule stays in ``sys.modules``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable]:
  """``(__getattr__, __dir__)`` for ``package`` exporting ``{name: submodule}``.

  ``submodule`` is relative to ``package`` (e.g. ``"cmt"`` for ``package.cmt``) or absolute
  when it starts with ``"cmtjax."``.
  """

  def __getattr__(name: str):
    if name not in exports:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    where = exports[name]
    module = importlib.import_module(where if where.startswith("cmtjax.")
                                     else f"{package}.{where}")
    value = getattr(module, name)
    globals_of(package)[name] = value  # later reads skip __getattr__
    return value

  def __dir__() -> list[str]:
    return sorted(set(globals_of(package)) | set(exports))

  shadowed = {name for name, where in exports.items() if where == name}
  if shadowed:
    sys.modules[package].__class__ = _keep_exports(package, shadowed)
  return __getattr__, __dir__


def _keep_exports(package: str, names: set[str]) -> type:
  class Package(types.ModuleType):
    def __setattr__(self, name, value):
      if (name in names and isinstance(value, types.ModuleType)
          and value.__name__ == f"{package}.{name}"):
        return  # the import system binding the submodule: keep the exported function
      super().__setattr__(name, value)
  return Package


def globals_of(package: str) -> dict:
  return vars(sys.modules[package])
