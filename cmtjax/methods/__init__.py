"""Training methods, each a :class:`~cmtjax.train.state.Method` for the one loop."""

from __future__ import annotations

from typing import Optional

from cmtjax.methods.cmt import CMTConfig, CMTInfo, CMTState, make_cmt
from cmtjax.methods.fab import FABConfig, FABInfo, FABState, make_fab
from cmtjax.methods.forward_kl import ForwardKLConfig, ForwardKLInfo, make_forward_kl
from cmtjax.methods.reverse_kl import ReverseKLConfig, ReverseKLInfo, make_reverse_kl
from cmtjax.methods.tabg import (TABGConfig, TABGInfo, clip_log_weights, make_tabg,
                                 temperature_ladder)

# name -> (config attribute of RunConfig, factory, target evaluations per step)
METHODS = {
    "cmt": ("cmt", make_cmt, lambda c: int(c.n_samples)),
    "reverse_kl": ("reverse_kl", make_reverse_kl, lambda c: int(c.batch_size * c.n_grad_steps)),
    "fab": ("fab", make_fab, lambda c: c.evals_per_step),
    "tabg": ("tabg", make_tabg, lambda c: int(c.n_samples)),
    "forward_kl": ("forward_kl", make_forward_kl, lambda c: c.evals_per_step),
}


def make_method(name: str, config, flow, target, n_steps: int,
                max_target_evals: Optional[int] = None):
  """Builds method ``name`` from its config dataclass.

  ``n_steps`` is the planned number of outer steps; CMT also takes the budget
  ``max_target_evals``, since with a larger annealing buffer its step count depends on when
  it reaches the target.
  """
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
  if name == "cmt":
    return make_cmt(config, flow, target, n_steps, max_target_evals=max_target_evals)
  return METHODS[name][1](config, flow, target, n_steps)


def evals_per_step(name: str, config) -> int:
  """Target evaluations of one outer step of method ``name``."""
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
  return METHODS[name][2](config)


__all__ = ["CMTConfig", "CMTInfo", "CMTState", "FABConfig", "FABInfo", "FABState",
           "ForwardKLConfig", "ForwardKLInfo", "METHODS", "ReverseKLConfig", "ReverseKLInfo",
           "TABGConfig", "TABGInfo", "clip_log_weights", "evals_per_step", "make_cmt",
           "make_fab", "make_forward_kl", "make_method", "make_reverse_kl", "make_tabg",
           "temperature_ladder"]
