"""The method registry: one entry per training method.

A method lives in one module that defines ``SPEC``, a :class:`MethodSpec`: its config class
(the ``[name]`` section of a run's config, which also states the cost of one outer step as
its ``evals_per_step`` property), its factory, and how a run reports it (extra metrics from
the step records, its plot). The runner, the CLI, the
config loader and the benchmarks read the registry and nothing else, so adding a method is
one new module plus one line in :data:`METHOD_MODULES` (or :func:`register` at run time, e.g.
for a method defined outside cmtjax).

Modules are imported only when a method is asked for: listing the names imports no jax.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Optional

# name -> module defining SPEC. The registry lines.
METHOD_MODULES: dict[str, str] = {
    "cmt": "cmtjax.methods.cmt",
    "reverse_kl": "cmtjax.methods.reverse_kl",
    "fab": "cmtjax.methods.fab",
    "tabg": "cmtjax.methods.tabg",
    "forward_kl": "cmtjax.methods.forward_kl",
    "smc": "cmtjax.methods.smc",
}

_REGISTERED: dict[str, "MethodSpec"] = {}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """What the rest of cmtjax needs to know about a training method.

  Attributes:
    name: the method's name (``--method NAME``, the ``[NAME]`` config section).
    config: frozen dataclass of its hyperparameters (validated in ``__post_init__``), with
      an ``evals_per_step`` property: the target evaluations of one outer step (for a method
      whose cost varies, that of a step at the end; the loop then asks
      ``Method.step_evals``). The factory uses the same property, so the cost is written once.
    make: ``(config, flow, target, n_steps, *, max_target_evals) -> Method``; ``n_steps`` is
      the planned number of outer steps, ``max_target_evals`` the run's budget.
    summary: ``(records, config, target) -> dict`` of extra figures for ``metrics.json``
      from the step records (None: none).
    plot: ``(out_dir, records, config, title) -> None`` writes the method's own training
      plot (None: the loop's generic loss / ESS curve, ``training.png``).
    particle_method: the method's result is a weighted particle set, not a trained flow
      (its ``Method.particles`` is set; a run folder then has no flow to sample).
  """

  name: str
  config: type
  make: Callable[..., Any]
  summary: Optional[Callable[[list, Any, Any], dict]] = None
  plot: Optional[Callable[[str, list, Any, str], None]] = None
  particle_method: bool = False


def method_names() -> tuple[str, ...]:
  """Every registered method's name (imports nothing)."""
  return tuple(METHOD_MODULES) + tuple(n for n in _REGISTERED if n not in METHOD_MODULES)


def get_method(name: str) -> MethodSpec:
  """The :class:`MethodSpec` of ``name`` (a ValueError naming the known ones otherwise)."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name not in METHOD_MODULES:
    raise ValueError(f"unknown method {name!r}; known methods: {', '.join(method_names())}")
  spec = importlib.import_module(METHOD_MODULES[name]).SPEC
  if not isinstance(spec, MethodSpec) or spec.name != name:
    raise TypeError(f"{METHOD_MODULES[name]}.SPEC must be the MethodSpec of {name!r}")
  return spec


def register(spec: MethodSpec) -> None:
  """Adds a method at run time (its name must be new and not a config section name)."""
  from cmtjax.io.config import RunConfig  # noqa: PLC0415 - io.config imports this module
  reserved = {f.name for f in dataclasses.fields(RunConfig)}
  if spec.name in METHOD_MODULES or spec.name in _REGISTERED or spec.name in reserved:
    raise ValueError(f"method name {spec.name!r} is taken")
  if not dataclasses.is_dataclass(spec.config) or not hasattr(spec.config, "evals_per_step"):
    raise TypeError(f"method {spec.name!r}: config must be a dataclass with an "
                    f"evals_per_step property")
  _REGISTERED[spec.name] = spec


def unregister(name: str) -> None:
  """Removes a method added by :func:`register` (for tests)."""
  _REGISTERED.pop(name, None)


def make_method(name: str, config, flow, target, n_steps: int,
                max_target_evals: Optional[int] = None):
  """Builds method ``name`` from its config dataclass (see :attr:`MethodSpec.make`)."""
  spec = get_method(name)
  if not isinstance(config, spec.config):
    raise TypeError(f"method {name!r} takes a {spec.config.__name__}, got "
                    f"{type(config).__name__}")
  return spec.make(config, flow, target, n_steps, max_target_evals=max_target_evals)


def evals_per_step(name: str, config) -> int:
  """Target evaluations of one outer step of method ``name``."""
  get_method(name)
  return int(config.evals_per_step)
