"""Mode coverage metrics for targets with known modes, and per-well occupancy for many-well."""

from __future__ import annotations

import functools
from typing import Optional

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


@functools.partial(jax.jit, static_argnames="n_modes")
def mode_occupancy(mode_idx: Array, n_modes: int, weights: Optional[Array] = None) -> Array:
  """Fraction of (weighted) samples in each mode.

  Args:
    mode_idx: [batch] int mode index of each sample; indices outside [0, n_modes) (e.g. -1
      for "unassigned") are ignored.
    n_modes: number of modes (static).
    weights: optional [batch] non-negative weights (e.g. :func:`normalised_weights` for
      importance-weighted occupancy, or a 0/1 mask); unweighted counts when None.

  Returns:
    [n_modes] occupancy summing to one (all zero when no weight falls in a mode).
  """
  chex.assert_rank(mode_idx, 1)
  if weights is None:
    weights = jnp.ones(mode_idx.shape, jnp.float32)
  chex.assert_equal_shape([mode_idx, weights])
  occ = jax.ops.segment_sum(weights, mode_idx, num_segments=n_modes, mode="drop")
  total = jnp.sum(occ)
  return jnp.where(total > 0, occ / jnp.where(total > 0, total, 1.0), 0.0)


@jax.jit
def modes_covered(occupancy: Array, true_weights: Array, threshold: float = 0.25) -> Array:
  """Number of modes holding at least ``threshold`` × their true share.

  Args:
    occupancy: [n_modes] occupancy of the model (sums to one).
    true_weights: [n_modes] true mode probabilities (sum to one).
    threshold: a mode counts when occupancy ≥ threshold · true weight. (A mode of true
      weight 0 always counts.)

  Returns:
    int32 scalar in [0, n_modes].
  """
  chex.assert_rank(occupancy, 1)
  chex.assert_equal_shape([occupancy, true_weights])
  return jnp.sum(occupancy >= threshold * true_weights, dtype=jnp.int32)


@jax.jit
def mode_tv(occupancy: Array, true_weights: Array) -> Array:
  """Total variation ½ Σ_k |P_k - Q_k| between two mode distributions [n_modes] -> scalar."""
  chex.assert_rank(occupancy, 1)
  chex.assert_equal_shape([occupancy, true_weights])
  return 0.5 * jnp.sum(jnp.abs(occupancy - true_weights))


@jax.jit
def right_well_fraction(
    x: Array, well_boundary: float, weights: Optional[Array] = None) -> Array:
  """Per copy of a many-well target, the (weighted) fraction of samples in the right well.

  Args:
    x: [batch, dim] samples laid out as pairs (x1, x2); the double-well coordinates are
      ``x[:, 0::2]``.
    well_boundary: barrier position; x1 > well_boundary is the right well.
    weights: optional [batch] non-negative weights (unweighted when None).

  Returns:
    [dim // 2] fractions in [0, 1].
  """
  chex.assert_rank(x, 2)
  if weights is None:
    weights = jnp.ones(x.shape[:1], x.dtype)
  chex.assert_shape(weights, x.shape[:1])
  return _weighted_fraction(x[:, 0::2] > well_boundary, weights)


def _weighted_fraction(indicator: Array, weights: Array) -> Array:
  """Weighted mean of a boolean [batch, k] over the batch -> [k] (0 when all weights are 0)."""
  total = jnp.sum(weights)
  return (weights @ indicator.astype(weights.dtype)) / jnp.where(total > 0, total, 1.0)


@jax.jit
def well_occupancy_tv(
    x: Array, well_boundary: float, right_well_prob: float,
    weights: Optional[Array] = None) -> Array:
  """Many-well occupancy error: TV between sampled and true well occupancy, averaged over copies.

  Each copy of the double well is a two-state (left/right well) distribution, whose TV
  distance to the truth is |P̂(right) - P(right)|; this returns its mean over the dim/2 copies.
  ``well_boundary`` and ``right_well_prob`` are in ``target.info`` of the many-well and
  double-well targets.

  Args:
    x: [batch, dim] samples (pairs (x1, x2), see :func:`right_well_fraction`).
    well_boundary: barrier position.
    right_well_prob: true probability of the right well of one copy.
    weights: optional [batch] non-negative weights (e.g. normalised importance weights).

  Returns:
    Scalar in [0, 1].
  """
  return jnp.mean(jnp.abs(right_well_fraction(x, well_boundary, weights) - right_well_prob))
