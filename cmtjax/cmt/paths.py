"""The four CMT paths (one switch) and the α/β bookkeeping of the learned schedule.

| path                 | λ    | η    | q_{i+1} ∝                      |
|----------------------|------|------|--------------------------------|
| "geometric_tempered" | free | free | q_i^{λ/(1+λ+η)} p̃^{1/(1+λ+η)} |
| "geometric"          | free | 0    | q_i^{λ/(1+λ)} p̃^{1/(1+λ)}     |
| "tempered"           | 0    | free | p̃^{1/(1+η)}                   |
| "none"               | 0    | 0    | p̃                              |

Bookkeeping: q_i ∝ q_0^{1−β_i} p̃^{α_i β_i}. With a_i = λ_i/s_i, b_i = 1/s_i, s_i = 1+λ_i+η_i:
1 − β_{i+1} = a_i (1 − β_i) and α_{i+1} β_{i+1} = a_i α_i β_i + b_i. We start from β_0 = 0 and
α_0 = 1 (α_0 is arbitrary while β_0 = 0; 1 makes T/α the target temperature at β = 0 too).
While β stays 0 (λ = ∞, which the solver never returns) α keeps its value. T/α_i is the
effective temperature of the tempered part of step i.

The bookkeeping assumes each fit is exact (q̂_{i+1} = q_{i+1}); it describes the *requested*
path, and the realised path of a finite fit differs (log both).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

PATHS = ("geometric_tempered", "geometric", "tempered", "none")


def path_constraints(path: str) -> tuple[bool, bool]:
  """Which multipliers a path frees: ``(use_trust_region, use_entropy)``.

  Raises:
    ValueError: for an unknown path name.
  """
  table = {
      "geometric_tempered": (True, True),
      "geometric": (True, False),
      "tempered": (False, True),
      "none": (False, False),
  }
  if path not in table:
    raise ValueError(f"unknown CMT path {path!r}; known paths: {', '.join(PATHS)}")
  return table[path]


class PathState(NamedTuple):
  """Where the annealing path stands: q_i ∝ q_0^{1−β} p̃^{αβ}."""

  alpha: Array
  beta: Array


def init_path(dtype=jnp.float32) -> PathState:
  """β_0 = 0 (we are at q_0), α_0 = 1."""
  return PathState(alpha=jnp.ones((), dtype), beta=jnp.zeros((), dtype))


def update_path(state: PathState, lam: Array, eta: Array) -> PathState:
  """Advances (α, β) by one step with multipliers (λ, η)."""
  s = 1.0 + lam + eta
  a = lam / s
  b = 1.0 / s
  beta = 1.0 - a * (1.0 - state.beta)
  ab = a * state.alpha * state.beta + b
  alpha = jnp.where(beta > 0, ab / jnp.where(beta > 0, beta, 1.0), state.alpha)
  return PathState(alpha=jnp.clip(alpha, 0.0, 1.0), beta=jnp.clip(beta, 0.0, 1.0))
