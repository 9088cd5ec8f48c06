"""Targets by name: ``make_target("gmm40")``, or the user's own.

A target spec (the ``target`` of a run config) is one of:

  * a registered name (:data:`TARGET_NAMES`). Synthetic targets are built here; the shipped
    molecules ("aldp", "ala4", "ala6", "elil") by
    ``cmtjax.targets.molecules.make_molecular_target``, imported only when one of them is
    asked for, so the synthetic targets work without the molecular extra (openmm, mdtraj);
  * a PDB file (``path/to/molecule.pdb``, hydrogens present): the molecule with
    AMBER99SB-ILDN + OBC2 by default (``target_kwargs.forcefield_files`` picks others, e.g.
    ``["amber14-all.xml", "implicit/obc2.xml"]``);
  * a Python factory returning a :class:`~cmtjax.targets.base.Target`:
    ``package.module:function`` (importable; the working directory is searched too) or
    ``path/to/file.py:function`` (the file's own folder is searched for its imports).
    ``target_kwargs`` are passed to it.

:func:`resolve_target_spec` checks a spec before anything heavy is imported and makes file
paths absolute, so a saved config names the same PDB or ``.py`` file from any working directory
(a ``package.module`` is found wherever Python finds it). A Target object given from Python is
labelled ``object:<name>``: no config can rebuild it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
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


USER_SPEC_HELP = ("a PDB file (path/to/molecule.pdb) or a Python factory returning a Target "
                  "(package.module:function or path/to/file.py:function)")


OBJECT_PREFIX = "object:"


def target_kind(spec: str) -> str:
  """``"registered"``, ``"pdb"``, ``"python"`` (see the module docstring), ``"object"`` (the
  label ``object:<name>`` of a Target object given to ``runner.run`` / ``cmtjax.fit``, which a
  config cannot rebuild) or ``"unknown"``."""
  if spec in TARGET_NAMES:
    return "registered"
  if spec.startswith(OBJECT_PREFIX):
    return "object"
  if spec.lower().endswith(".pdb"):
    return "pdb"
  if ":" in spec:
    return "python"
  return "unknown"


def resolve_target_spec(spec: str) -> str:
  """Checks a target spec and returns it with file paths made absolute.

  Raises:
    ValueError: an unknown name, a missing file, or a malformed ``module:function``.
  """
  kind = target_kind(spec)
  if kind == "registered":
    return spec
  if kind == "object":
    raise ValueError(f"target {spec!r} was a Target object given from Python: a config cannot "
                     f"rebuild it; pass the object again (cmtjax.load_run(DIR, target=...), "
                     f"cmtjax.fit(target, ..., resume=True))")
  if kind == "pdb":
    if not os.path.isfile(spec):
      raise ValueError(f"target {spec!r}: PDB file not found")
    return os.path.abspath(spec)
  if kind == "python":
    module, _, function = spec.rpartition(":")
    if not module or not function.isidentifier():
      raise ValueError(f"target {spec!r}: expected package.module:function or "
                       f"path/to/file.py:function")
    if module.endswith(".py"):
      if not os.path.isfile(module):
        raise ValueError(f"target {spec!r}: Python file {module!r} not found")
      return f"{os.path.abspath(module)}:{function}"
    return spec
  raise ValueError(f"unknown target {spec!r}; known targets: {', '.join(TARGET_NAMES)}; or "
                   f"{USER_SPEC_HELP}")


def _load_factory(spec: str):
  module_name, _, function = spec.rpartition(":")
  try:
    if module_name.endswith(".py"):
      path = os.path.abspath(module_name)
      with open(path, "rb") as f:  # a module per file content: an edited file is read again
        digest = hashlib.sha1(path.encode() + f.read()).hexdigest()[:16]
      unique = f"cmtjax_user_target_{digest}"
      module = sys.modules.get(unique)
      if module is None:
        loader_spec = importlib.util.spec_from_file_location(unique, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[unique] = module
        folder = os.path.dirname(path)
        sys.path.insert(0, folder)  # the file may import modules next to it
        try:
          loader_spec.loader.exec_module(module)
        except BaseException:
          del sys.modules[unique]  # a later attempt reports the real error again
          raise
        finally:
          sys.path.remove(folder)
    else:
      if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # `cmtjax` run from a project folder finds its modules
      module = importlib.import_module(module_name)
  except Exception as e:  # the user's module: any error while importing it
    raise ValueError(f"target {spec!r}: importing {module_name!r} failed with "
                     f"{type(e).__name__}: {e}") from e
  factory = getattr(module, function, None)
  if not callable(factory):
    raise ValueError(f"target {spec!r}: {module_name!r} has no function {function!r}")
  return factory


def _make_user_target(spec: str, **kwargs: Any) -> "Target":
  from cmtjax.targets.base import Target
  factory = _load_factory(spec)
  try:
    target = factory(**kwargs)
  except TypeError as e:
    raise ValueError(f"target {spec!r}: calling the factory with target_kwargs "
                     f"{sorted(kwargs)} failed: {e}") from e
  if not isinstance(target, Target):
    raise ValueError(f"target {spec!r}: the factory returned {type(target).__name__}, not a "
                     f"cmtjax.Target")
  return target


def _make_pdb_target(path: str, **kwargs: Any) -> "Target":
  try:
    from cmtjax.targets.molecules import make_molecular_system
    from cmtjax.targets.molecules.systems import SYSTEM_KWARGS
  except ImportError as e:
    raise ImportError(f"a PDB target needs the 'molecules' extra (openmm, mdtraj): {e}") from e
  accepted = (*SYSTEM_KWARGS, "name")
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(f"target {path!r} got unknown keyword argument(s) "
                     f"{', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}")
  if "forcefield_files" in kwargs:
    kwargs["forcefield_files"] = tuple(kwargs["forcefield_files"])
  return make_molecular_system(path, **kwargs).target


def make_target(name: str, **kwargs: Any) -> "Target":
  """Builds a target from its spec (see the module docstring).

  Args:
    name: one of :data:`TARGET_NAMES`, a PDB file, or ``module:function``.
    **kwargs: overrides of the target's adjustable parameters (e.g. ``seed``, ``scale`` for
      the GMMs, ``dim`` for "gmm16"); molecular targets pass them on unchanged; a PDB takes
      ``forcefield_files``, ``temperature``, ``precision``, ...; a factory gets them all.

  Returns:
    The :class:`Target` (for a registered name, ``target.name == name``).

  Raises:
    ValueError: unknown name, or a keyword the target does not accept.
    ImportError: a molecular target was asked for but the molecular module is unavailable.
  """
  if name in MOLECULAR_TARGET_NAMES:
    return _make_molecular(name, **kwargs)
  kind = target_kind(name)
  if kind == "pdb":
    return _make_pdb_target(resolve_target_spec(name), **kwargs)
  if kind in ("python", "object"):
    return _make_user_target(resolve_target_spec(name), **kwargs)
  if name not in _SYNTHETIC:
    resolve_target_spec(name)  # raises the unknown-target error
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
