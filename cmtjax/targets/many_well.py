"""The many-well target: dim/2 independent copies of the 2-D double well.

x is laid out as pairs: copy i uses (x1, x2) = (x[2i], x[2i+1]), so the double-well
coordinates are ``x[:, 0::2]`` and the Gaussian ones ``x[:, 1::2]``. With 2^(dim/2) modes,
the modes are not enumerated; ``info`` carries what :func:`cmtjax.metrics.well_occupancy_tv`
needs instead (the barrier position and the true probability of the right well).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from cmtjax.targets.base import Target
from cmtjax.targets.double_well import double_well_1d, energy_1d, make_sampler_1d

Array = jax.Array


def many_well(dim: int = 32, name: str | None = None) -> Target:
  """Many-well target: log p̃(x) = Σ_i [-E(x[2i]) - x[2i+1]²/2].

  Args:
    dim: even dimension; there are dim/2 copies of the double well.
    name: registry name; defaults to ``f"many_well{dim}"``.

  Returns:
    A :class:`Target` with ``log_Z = (dim/2) (log Z_1d + ½ log 2π)`` (Z_1d by float64
    quadrature; 164.6957 for dim 32), exact ``sample``, no enumerated modes, and ``info``
    with ``n_copies``, ``well_boundary`` and ``right_well_prob``.
  """
  if dim < 2 or dim % 2:
    raise ValueError(f"many_well needs an even dim >= 2, got {dim}")
  n_copies = dim // 2
  facts = double_well_1d()
  sample_1d = make_sampler_1d()

  def log_prob(x: Array) -> Array:
    """log p̃(x). x: [batch, dim] -> [batch]."""
    chex.assert_rank(x, 2)
    chex.assert_axis_dimension(x, 1, dim)
    return (-jnp.sum(energy_1d(x[:, 0::2]), axis=-1)
            - 0.5 * jnp.sum(x[:, 1::2] ** 2, axis=-1))

  def sample(key: Array, n: int) -> Array:
    """Exact samples [n, dim]."""
    k1, k2 = jax.random.split(key)
    x1 = sample_1d(k1, (n, n_copies))
    x2 = jax.random.normal(k2, (n, n_copies))
    return jnp.stack([x1, x2], axis=-1).reshape(n, dim)

  return Target(
      name=name if name is not None else f"many_well{dim}",
      dim=dim,
      log_prob=jax.jit(log_prob),
      log_Z=n_copies * (facts.log_Z + 0.5 * math.log(2.0 * math.pi)),
      sample=jax.jit(sample, static_argnums=1),
      plot_bounds=(-3.0, 3.0),
      info={
          "family": "many_well",
          "energy": "per copy E(x1) = x1^4 - 6 x1^2 - 0.5 x1; log p(x) = -E(x1) - x2^2/2",
          "layout": "copy i is (x[2i], x[2i+1])",
          "n_copies": n_copies,
          "well_boundary": facts.barrier,
          "right_well_prob": facts.right_prob,
          "log_Z_1d": facts.log_Z,
      },
  )
