"""Targets by name: ``make_target("gmm40")``.

Synthetic targets are built here. Molecular targets ("aldp", "ala4", "ala6", "elil") are
delegated to ``cmtjax.targets.molecules.make_molecular_target(name, **kwargs)``, imported
only when one of them is asked for, so the synthetic targets work without the molecular
extra (openmm, mdtraj).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from cmtjax.targets.base import Target


@dataclasses.dataclass(frozen=True)
class _Entry:
  """A registered synthetic target: a factory (``"module:function"`` in cmtjax.targets,
  imported when the target is built), fixed arguments, overridable defaults."""

  factory: str
  fixed: dict[str, Any]
  defaults: dict[str, Any]


_SYNTHETIC: dict[str, _Entry] = {
    # The standard GMM-40 benchmark: 40 modes in [-40, 40]², unit component std.
    "gmm40": _Entry("gmm:gmm", dict(n_modes=40, dim=2, box=40.0),
                    dict(scale=1.0, seed=0)),
    # The published GMM-40 of FAB / TA-BG / iDEM (fixed means, std softplus(1)).
    "gmm40_fab": _Entry("gmm:gmm40_fab", {}, {}),
    # Same construction in 50-D.
    "gmm40_50d": _Entry("gmm:gmm", dict(n_modes=40, dim=50, box=40.0),
                        dict(scale=1.0, seed=0)),
    # 16 modes in [-20, 20]^dim.
    "gmm16": _Entry("gmm:gmm", dict(n_modes=16, box=20.0),
                    dict(dim=10, scale=1.0, seed=0)),
    "many_well32": _Entry("many_well:many_well", dict(dim=32), {}),
    "double_well2d": _Entry("double_well:double_well", {}, {}),
}

MOLECULAR_TARGET_NAMES: tuple[str, ...] = ("aldp", "ala4", "ala6", "elil")
SYNTHETIC_TARGET_NAMES: tuple[str, ...] = tuple(_SYNTHETIC)
TARGET_NAMES: tuple[str, ...] = SYNTHETIC_TARGET_NAMES + MOLECULAR_TARGET_NAMES

_MOLECULES_MODULE = "cmtjax.targets.molecules"


def _make_molecular(name: str, **kwargs: Any) -> "Target":
  try:
    module = importlib.import_module(_MOLECULES_MODULE)
    make = module.make_molecular_target
  except (ImportError, AttributeError) as e:
    raise ImportError(
        f"molecular target {name!r} is unavailable: it needs the module "
        f"{_MOLECULES_MODULE} with make_molecular_target() and the 'molecules' extra "
        f"(pip install 'cmtjax[molecules]', i.e. openmm and mdtraj); the import failed "
        f"with: {type(e).__name__}: {e}") from e
  return make(name, **kwargs)


def make_target(name: str, **kwargs: Any) -> "Target":
  """Builds a registered target.

  Args:
    name: one of :data:`TARGET_NAMES`.
    **kwargs: overrides of the target's adjustable parameters (e.g. ``seed``, ``scale`` for
      the GMMs, ``dim`` for "gmm16"); molecular targets pass them on unchanged.

  Returns:
    The :class:`Target`, with ``target.name == name``.

  Raises:
    ValueError: unknown name, or a keyword the target does not accept.
    ImportError: a molecular target was asked for but the molecular module is unavailable.
  """
  if name in MOLECULAR_TARGET_NAMES:
    return _make_molecular(name, **kwargs)
  if name not in _SYNTHETIC:
    raise ValueError(
        f"unknown target {name!r}; known targets: {', '.join(TARGET_NAMES)}")
  entry = _SYNTHETIC[name]
  unknown = sorted(set(kwargs) - set(entry.defaults))
  if unknown:
    accepted = ", ".join(sorted(entry.defaults)) or "none"
    raise ValueError(
        f"target {name!r} got unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
        f"accepted: {accepted}")
  module, function = entry.factory.split(":")
  factory = getattr(importlib.import_module(f"cmtjax.targets.{module}"), function)
  return factory(**entry.fixed, **{**entry.defaults, **kwargs}, name=name)
