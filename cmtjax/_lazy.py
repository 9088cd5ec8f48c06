"""Lazy package exports: ``import cmtjax`` (and ``cmtjax --help``) without importing jax.

A package lists what it exports and from which submodule; a name is imported the first time
it is read (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib
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

  return __getattr__, __dir__


def globals_of(package: str) -> dict:
  import sys
  return vars(sys.modules[package])
