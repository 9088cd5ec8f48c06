"""Equal-weight isotropic Gaussian mixtures (GMM-40 and friends).

The mixture has ``n_modes`` components with a common standard deviation ``scale`` and means
drawn once, at construction, as

    means = jax.random.uniform(jax.random.PRNGKey(seed), (n_modes, dim),
                               minval=-box, maxval=box)          # float32

with jax's default PRNG (threefry2x32, ``jax_threefry_partitionable`` at its default, True
since jax 0.5), unless the means are given. The density is normalised, so ``log_Z = 0``.

Two GMM-40s live side by side (both 40 equal-weight modes in [-40, 40]²):

* ``gmm40``: cmtjax's own, means from the jax draw above, unit component std;
* ``gmm40_fab``: the instance FAB, TA-BG and iDEM publish results on, means from
  ``torch.manual_seed(0); (torch.rand(40, 2) - 0.5) * 2 * 40`` (shipped as data in
  ``data/gmm40_fab_means.txt``, see :func:`fab_gmm40_means`) and per-dimension std
  softplus(1) = 1.3132616. Published GMM numbers are comparable only on this one.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.targets.base import Target

Array = jax.Array


def gmm_means(n_modes: int, dim: int, box: float, seed: int) -> Array:
  """The component means of :func:`gmm`: ``[n_modes, dim]``, uniform in ``[-box, box]^dim``."""
  return jax.random.uniform(
      jax.random.PRNGKey(seed), (n_modes, dim), minval=-box, maxval=box)


FAB_GMM40_SCALE = 1.3132616  # softplus(1) in float32: FAB's per-dimension std
_FAB_MEANS_FILE = os.path.join(os.path.dirname(__file__), "data", "gmm40_fab_means.txt")


def fab_gmm40_means() -> np.ndarray:
  """The means of FAB's GMM-40, ``[40, 2]`` float32, read from the shipped data file."""
  means = np.loadtxt(_FAB_MEANS_FILE, dtype=np.float32, comments="#")
  if means.shape != (40, 2):
    raise ValueError(f"{_FAB_MEANS_FILE}: expected 40 x 2 numbers, found shape {means.shape}")
  return means


def _nearest(x: Array, means: Array) -> Array:
  """Index of the nearest mean. x: [batch, dim], means: [n_modes, dim] -> [batch] int32."""
  d2 = jnp.sum((x[:, None, :] - means[None, :, :]) ** 2, axis=-1)
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def gmm(
    n_modes: int = 40,
    dim: int = 2,
    box: float = 40.0,
    scale: float = 1.0,
    seed: int = 0,
    name: Optional[str] = None,
    means: Optional[Array] = None,
    means_recipe: Optional[str] = None,
) -> Target:
  """An equal-weight mixture of isotropic Gaussians N(m_k, scale² I).

  Args:
    n_modes: number of components K.
    dim: dimension of x.
    box: means are uniform in ``[-box, box]^dim`` (see the module docstring for the draw).
    scale: standard deviation of every component.
    seed: seed of the ``jax.random.PRNGKey`` the means are drawn from.
    name: registry name; defaults to ``f"gmm{n_modes}_{dim}d"``.
    means: explicit component means ``[n_modes, dim]`` (then ``box`` and ``seed`` only set
      the plot bounds and the info); None draws them as the module docstring says.
    means_recipe: how explicit ``means`` were made, for ``info`` (where they come from).

  Returns:
    A normalised :class:`Target` (``log_Z = 0``) with exact ``sample``, ``mode_centres``
    ``[K, dim]``, uniform ``mode_weights`` ``[K]`` and nearest-centre ``assign_modes``.
  """
  if n_modes < 1 or dim < 1:
    raise ValueError(f"gmm needs n_modes >= 1 and dim >= 1, got {n_modes=}, {dim=}")
  if not scale > 0 or not box > 0:
    raise ValueError(f"gmm needs scale > 0 and box > 0, got {scale=}, {box=}")
  if means is None:
    means = gmm_means(n_modes, dim, box, seed)
    recipe = ("jax.random.uniform(jax.random.PRNGKey(seed), (n_modes, dim), "
              "minval=-box, maxval=box)")
  else:
    means = jnp.asarray(means, jnp.float32)
    if means.shape != (n_modes, dim):
      raise ValueError(f"gmm: means must have shape ({n_modes}, {dim}), got {means.shape}")
    recipe = means_recipe or "given"
  # Per-component log normaliser plus log(1/K): log p = logsumexp_k(-|x-m_k|²/2s²) + const.
  log_const = (-dim * math.log(scale) - 0.5 * dim * math.log(2.0 * math.pi)
               - math.log(n_modes))
  inv_var = 1.0 / (scale * scale)

  def log_prob(x: Array) -> Array:
    """log p(x) (normalised). x: [batch, dim] -> [batch]."""
    chex.assert_rank(x, 2)
    chex.assert_axis_dimension(x, 1, dim)
    # Explicit differences (not |x|² - 2x·m + |m|²), which would cancel badly in float32.
    d2 = jnp.sum((x[:, None, :] - means[None, :, :].astype(x.dtype)) ** 2, axis=-1)
    return jax.nn.logsumexp(-0.5 * inv_var * d2, axis=-1) + log_const

  def sample(key: Array, n: int) -> Array:
    """Exact samples: a uniform component, then Gaussian noise. Returns [n, dim]."""
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.randint(k_comp, (n,), 0, n_modes)
    return means[comp] + scale * jax.random.normal(k_noise, (n, dim))

  def assign_modes(x: Array) -> Array:
    """Nearest component mean. x: [batch, dim] -> [batch] int32."""
    chex.assert_rank(x, 2)
    return _nearest(x, means.astype(x.dtype))

  return Target(
      name=name if name is not None else f"gmm{n_modes}_{dim}d",
      dim=dim,
      log_prob=jax.jit(log_prob),
      log_Z=0.0,
      sample=jax.jit(sample, static_argnums=1),
      mode_centres=means,
      mode_weights=jnp.full((n_modes,), 1.0 / n_modes),
      assign_modes=jax.jit(assign_modes),
      plot_bounds=(-1.25 * box, 1.25 * box),
      info={
          "family": "gmm",
          "n_modes": n_modes,
          "dim": dim,
          "box": float(box),
          "scale": float(scale),
          "seed": seed,
          "means": recipe,
      },
  )


def gmm40_fab(name: str = "gmm40_fab") -> Target:
  """FAB's GMM-40 (also used by TA-BG and iDEM): the published instance, log Z = 0.

  40 equal-weight 2-D Gaussians, per-dimension std softplus(1), means from
  ``torch.manual_seed(0); (torch.rand(40, 2) - 0.5) * 2 * 40`` (:func:`fab_gmm40_means`).
  """
  return gmm(n_modes=40, dim=2, box=40.0, scale=FAB_GMM40_SCALE, seed=0, name=name,
             means=fab_gmm40_means(),
             means_recipe="torch.manual_seed(0); (torch.rand(40, 2) - 0.5) * 2 * 40")
