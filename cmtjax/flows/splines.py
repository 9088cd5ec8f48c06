"""Rational-quadratic spline on [-box, box], identity outside (batched, fast).

The spline is the monotone rational-quadratic spline of neural spline flows with
the same unconstrained parameterisation as ``distrax.RationalQuadraticSpline``
with ``boundary_slopes="identity"`` (bin sizes by softmax with a minimum size,
interior knot slopes by a softplus that maps 0 to slope 1, both boundary slopes
fixed to 1): given the same ``params`` the two compute the same function (the
tests check this). The evaluation here is written for whole batches at once (bin
look-up by comparison against the knots and a one-hot reduction over bins), which
is several times faster on CPU than evaluating the scalar spline under
``jnp.vectorize``, especially for gradients of the inverse.

Zero ``params`` give the identity map. Outside [-box, box] the map is the identity
with log-det 0; the spline branch is then evaluated at the clipped input so that
values and gradients stay finite for arbitrarily large inputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

MIN_BIN_SIZE = 1e-4
MIN_KNOT_SLOPE = 1e-4


class SplineKnots(NamedTuple):
  """Knots of a batch of splines (all ``[..., n_bins + 1]``).

  Attributes:
    x: knot positions on the input axis, from -box to box.
    y: knot positions on the output axis, from -box to box.
    slope: derivative at each knot (1 at both ends).
  """

  x: Array
  y: Array
  slope: Array


def n_spline_params(n_bins: int) -> int:
  """Length of the unconstrained parameter vector of one spline (3K + 1)."""
  return 3 * n_bins + 1


def _softplus(a: Array) -> Array:
  """log(1 + exp(a)), written so that XLA on CPU evaluates it quickly.

  (``jax.nn.softplus`` is several times slower there; for a < -17 this returns
  max(a, 0) = 0 instead of exp(a), an absolute difference below 1e-7.)
  """
  return jnp.maximum(a, 0.0) + jnp.log(1.0 + jnp.exp(-jnp.abs(a)))


def spline_knots(params: Array, box: float,
                 min_bin_size: float = MIN_BIN_SIZE,
                 min_knot_slope: float = MIN_KNOT_SLOPE) -> SplineKnots:
  """Knots of splines from unconstrained parameters.

  Args:
    params: [..., 3K + 1] = K bin widths, K bin heights, K + 1 knot slopes
      (unconstrained; the first and last slope entries are ignored, those slopes
      are 1).
    box: the spline acts on [-box, box].
    min_bin_size: minimum width and height of a bin.
    min_knot_slope: minimum interior knot slope (< 1).

  Returns:
    ``SplineKnots`` with arrays [..., K + 1].
  """
  n_bins = (params.shape[-1] - 1) // 3
  if 3 * n_bins + 1 != params.shape[-1]:
    raise ValueError(f"spline params must have 3K + 1 entries on the last axis, "
                     f"got {params.shape[-1]}")
  total = 2.0 * box
  if n_bins * min_bin_size > total:
    raise ValueError(f"{n_bins} bins of minimum size {min_bin_size} do not fit "
                     f"in [-{box}, {box}]")

  def knots_from(unnormalised: Array) -> Array:
    sizes = jax.nn.softmax(unnormalised, axis=-1)
    sizes = sizes * (total - n_bins * min_bin_size) + min_bin_size
    # Cumulative sums as a product with a constant triangular matrix: much
    # faster than jnp.cumsum on CPU for short rows (and exact in structure).
    tri = jnp.triu(jnp.ones((n_bins - 1, n_bins - 1), sizes.dtype))
    inner = -box + sizes[..., :-1] @ tri
    lo = jnp.full(inner.shape[:-1] + (1,), -box, inner.dtype)
    hi = jnp.full(inner.shape[:-1] + (1,), box, inner.dtype)
    return jnp.concatenate([lo, inner, hi], axis=-1)

  x = knots_from(params[..., :n_bins])
  y = knots_from(params[..., n_bins:2 * n_bins])
  offset = math.log(math.expm1(1.0 - min_knot_slope))
  inner_slopes = (_softplus(params[..., 2 * n_bins + 1:3 * n_bins] + offset)
                  + min_knot_slope)
  ones = jnp.ones(inner_slopes.shape[:-1] + (1,), inner_slopes.dtype)
  slope = jnp.concatenate([ones, inner_slopes, ones], axis=-1)
  return SplineKnots(x=x, y=y, slope=slope)


def _bin_params(value: Array, edges: Array, knots: SplineKnots):
  """Parameters of the bin of ``value`` (one-hot look-up over the last axis)."""
  n_bins = knots.x.shape[-1] - 1
  idx = jnp.sum(value[..., None] >= edges[..., 1:-1], axis=-1)
  onehot = (idx[..., None] == jnp.arange(n_bins)).astype(knots.x.dtype)
  # One stacked reduction instead of six (fewer ops to compile and run).
  table = jnp.stack([
      knots.x[..., :-1], jnp.diff(knots.x, axis=-1),
      knots.y[..., :-1], jnp.diff(knots.y, axis=-1),
      knots.slope[..., :-1], knots.slope[..., 1:],
  ], axis=-2)
  picked = jnp.sum(onehot[..., None, :] * table, axis=-1)
  return tuple(picked[..., i] for i in range(6))


def _log_derivative(s, d_lo, d_hi, xi, xi1, denom):
  """log f'(x) in a bin: s^2 (d_hi xi^2 + 2 s xi (1 - xi) + d_lo (1 - xi)^2) / denom^2.

  One log of the product (logs are the slow part on CPU); with bin sizes and
  slopes bounded below by 1e-4 the product stays far inside the float32 range.
  """
  num = d_hi * xi * xi + 2.0 * s * xi1 + d_lo * (1.0 - xi) ** 2
  return jnp.log(s * s * num / (denom * denom))


def spline_forward(x: Array, knots: SplineKnots,
                   box: float) -> tuple[Array, Array]:
  """Applies splines elementwise.

  Args:
    x: [...] inputs (same leading shape as the knots without their last axis).
    knots: the splines' knots, arrays [..., K + 1].
    box: half-width of the spline interval.

  Returns:
    ``(y, log_det)``, both [...]: outputs and log |dy/dx| per element.
  """
  inside = jnp.abs(x) < box
  xc = jnp.clip(x, -box, box)
  x_lo, width, y_lo, height, d_lo, d_hi = _bin_params(xc, knots.x, knots)
  s = height / width
  xi = jnp.clip((xc - x_lo) / width, 0.0, 1.0)
  xi1 = xi * (1.0 - xi)
  denom = s + (d_hi + d_lo - 2.0 * s) * xi1
  y = y_lo + height * (s * xi * xi + d_lo * xi1) / denom
  log_det = _log_derivative(s, d_lo, d_hi, xi, xi1, denom)
  return jnp.where(inside, y, x), jnp.where(inside, log_det, 0.0)


def spline_inverse(y: Array, knots: SplineKnots,
                   box: float) -> tuple[Array, Array]:
  """Applies the inverse splines elementwise.

  Args:
    y: [...] outputs of the splines.
    knots: the splines' knots, arrays [..., K + 1].
    box: half-width of the spline interval.

  Returns:
    ``(x, log_det)``, both [...]: inputs and log |dx/dy| per element.
  """
  inside = jnp.abs(y) < box
  yc = jnp.clip(y, -box, box)
  x_lo, width, y_lo, height, d_lo, d_hi = _bin_params(yc, knots.y, knots)
  s = height / width
  w = jnp.clip((yc - y_lo) / height, 0.0, 1.0)
  # Normalised quadratic a xi^2 + b xi + c = 0 for the bin coordinate xi.
  t = d_hi + d_lo - 2.0 * s
  c = -s * w
  b = d_lo - t * w
  a = s - b
  disc = jnp.maximum(b * b - 4.0 * a * c, jnp.finfo(y.dtype).tiny)
  root = jnp.sqrt(disc)
  # Two algebraically equal forms of the root in [0, 1]; pick the stable one.
  b_pos = b >= 0.0
  num = jnp.where(b_pos, 2.0 * c, -b + root)
  den = jnp.where(b_pos, -b - root, 2.0 * a)
  xi = jnp.clip(num / den, 0.0, 1.0)
  x = x_lo + width * xi
  xi1 = xi * (1.0 - xi)
  denom = s + t * xi1
  log_det = -_log_derivative(s, d_lo, d_hi, xi, xi1, denom)
  return jnp.where(inside, x, y), jnp.where(inside, log_det, 0.0)


class RationalQuadraticSpline:
  """Elementwise rational-quadratic spline bijector, identity outside the box.

  Same parameters and same function as ``distrax.RationalQuadraticSpline(params,
  -box, box, boundary_slopes="identity")``; ``params`` has shape
  ``[..., 3K + 1]`` and broadcasts against the input ``[...]``.
  """

  def __init__(self, params: Array, box: float,
               min_bin_size: float = MIN_BIN_SIZE,
               min_knot_slope: float = MIN_KNOT_SLOPE):
    self._box = float(box)
    self._knots = spline_knots(params, self._box, min_bin_size, min_knot_slope)

  @property
  def knots(self) -> SplineKnots:
    """The splines' knots, arrays [..., K + 1]."""
    return self._knots

  def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
    """Computes y = f(x) and log |f'(x)| elementwise."""
    return spline_forward(x, self._knots, self._box)

  def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
    """Computes x = f^{-1}(y) and log |(f^{-1})'(y)| elementwise."""
    return spline_inverse(y, self._knots, self._box)
