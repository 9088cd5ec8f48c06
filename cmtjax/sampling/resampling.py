"""Multinomial resampling by the inverse CDF: the one rule behind CMT's fit minibatches and
TA-BG's buffer."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def cumulative_weights(log_w: Array) -> Array:
  """``[N]`` cumulative sums of exp(log_w − max log_w) (−inf entries add nothing)."""
  return jnp.cumsum(jnp.exp(log_w - jnp.max(log_w)))


def resample_indices(key: Array, cdf: Array, m: int) -> Array:
  """m indices drawn with replacement with probability ∝ the increments of ``cdf``.

  Inverse CDF: u ~ U[0, cdf[-1]), index = #{n: cdf[n] <= u}; O(m log N) given the CDF, which
  a caller drawing many batches from one set of weights computes once
  (:func:`cumulative_weights`). An entry of weight 0 is never drawn.
  """
  u = jax.random.uniform(key, (m,), cdf.dtype) * cdf[-1]
  return jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, cdf.shape[0] - 1)
