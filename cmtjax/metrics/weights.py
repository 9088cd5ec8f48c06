"""Importance weights: dropping non-finite entries, normalising.

Throughout cmtjax.metrics, ``log_w = log p̃(x) - log q(x)`` (unnormalised target over model,
both in the same space). Entries that are not finite (NaN, ±inf: a failed energy, a sample
outside the support) are dropped from every estimate; :func:`count_nonfinite` counts them.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def masked_log_weights(log_w: Array) -> tuple[Array, Array, Array]:
  """Splits off non-finite log weights.

  Args:
    log_w: [batch] log weights.

  Returns:
    (finite, lw, n): ``finite: [batch]`` bool mask, ``lw: [batch]`` with dropped entries set
    to -inf (weight 0), ``n`` the number of finite entries (int32 scalar).
  """
  chex.assert_rank(log_w, 1)
  finite = jnp.isfinite(log_w)
  lw = jnp.where(finite, log_w, -jnp.inf)
  return finite, lw, jnp.sum(finite, dtype=jnp.int32)


@jax.jit
def count_nonfinite(log_w: Array) -> Array:
  """Number of non-finite entries of ``log_w: [batch]`` (int32 scalar)."""
  chex.assert_rank(log_w, 1)
  return jnp.sum(~jnp.isfinite(log_w), dtype=jnp.int32)


@jax.jit
def normalised_weights(log_w: Array) -> Array:
  """Self-normalised importance weights w̄ = softmax(log_w), 0 on non-finite entries.

  Args:
    log_w: [batch] log weights.

  Returns:
    [batch] non-negative weights summing to one (all zero if no entry is finite).
  """
  _, lw, n = masked_log_weights(log_w)
  w = jax.nn.softmax(jnp.where(n > 0, lw, 0.0))
  return jnp.where(n > 0, w, 0.0)


def clip_largest_log_weights(log_w: Array, clip_fraction: float) -> tuple[Array, Array]:
  """Lowers the largest log weights to the largest one below them: the one clipping rule.

  With n finite entries and k = floor(n · clip_fraction) (computed with a 1e-5 relative
  margin, so that float32 rounding does not turn an exact integer such as 1e4 · 1e-4 into
  the integer below), the k largest log weights are set to the (k+1)-th largest, i.e. to
  the empirical (1 − clip_fraction) quantile. When n · clip_fraction < 1 nothing is
  clipped. Non-finite entries come back as −inf (weight 0). Used by the clipped reverse ESS
  and by TA-BG's resampling.

  Args:
    log_w: ``[N]`` log weights.
    clip_fraction: in [0, 1) (static or traced).

  Returns:
    ``(clipped: [N], n_clipped)``: ``n_clipped`` counts the entries that were lowered.
  """
  _, lw, n = masked_log_weights(log_w)
  k = jnp.floor(n.astype(jnp.float32) * clip_fraction * (1.0 + 1e-5)).astype(jnp.int32)
  k = jnp.minimum(k, jnp.maximum(n - 1, 0))
  descending = -jnp.sort(-lw)  # dropped entries (-inf) go last
  threshold = jnp.where(k > 0, descending[k], jnp.inf)
  return jnp.minimum(lw, threshold), jnp.sum(lw > threshold, dtype=jnp.int32)
