"""Estimates of log Z and its bounds from importance weights.

With log w = log p̃ - log q:
  * ``log_z_reverse``: log mean_{x~q} w (unbiased in Z, biased low in log Z).
  * ``elbo``: mean_{x~q} log w ≤ log Z (gap KL(q‖p)).
  * ``eubo``: mean_{x~p} log w ≥ log Z (gap KL(p‖q)).
  * ``log_z_forward``: -log mean_{x~p} 1/w (from E_p[1/w] = 1/Z).
All drop non-finite log weights and return NaN when none is finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.nn import logsumexp

from cmtjax.metrics.ess import forward_ess, forward_ess_without_top, top_log_weight_excess
from cmtjax.metrics.weights import masked_log_weights

Array = jax.Array


def _mean(log_w: Array) -> Array:
  finite, _, n = masked_log_weights(log_w)
  total = jnp.sum(jnp.where(finite, log_w, 0.0))
  return jnp.where(n > 0, total / jnp.maximum(n, 1), jnp.nan)


@jax.jit
def log_z_reverse(log_w: Array) -> Array:
  """log Z ≈ log mean w over model samples. log_w: [batch] at x ~ q -> scalar."""
  _, lw, n = masked_log_weights(log_w)
  return jnp.where(n > 0, logsumexp(lw) - jnp.log(n.astype(lw.dtype)), jnp.nan)


@jax.jit
def elbo(log_w: Array) -> Array:
  """Evidence lower bound mean log w over model samples. log_w: [batch] at x ~ q -> scalar."""
  return _mean(log_w)


@jax.jit
def eubo(log_w_ref: Array) -> Array:
  """Evidence upper bound mean log w over exact samples. log_w_ref: [batch] at x ~ p -> scalar."""
  return _mean(log_w_ref)


@jax.jit
def log_z_forward(log_w_ref: Array) -> Array:
  """log Z ≈ -log mean 1/w over exact samples. log_w_ref: [batch] at x ~ p -> scalar."""
  finite, lw, n = masked_log_weights(log_w_ref)
  neg = jnp.where(finite, -log_w_ref, -jnp.inf)
  return jnp.where(n > 0, jnp.log(n.astype(lw.dtype)) - logsumexp(neg), jnp.nan)


def reference_weight_figures(log_w_ref: Array) -> dict[str, Array]:
  """The figures of log weights ``log p̃ − log q`` at reference samples x ~ p, shared by the
  run evaluation and the molecular figures: ``eubo``, ``forward_ess``,
  ``forward_ess_without_top``, ``forward_top_log_w_excess`` and ``log_z_forward`` (scalars)."""
  return {
      "eubo": eubo(log_w_ref),
      "forward_ess": forward_ess(log_w_ref),
      "forward_ess_without_top": forward_ess_without_top(log_w_ref),
      "forward_top_log_w_excess": top_log_weight_excess(log_w_ref),
      "log_z_forward": log_z_forward(log_w_ref),
  }
