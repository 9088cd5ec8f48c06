"""Effective sample size (ESS) of importance weights, as a fraction in [0, 1].

For weights w = p̃/q the efficiency of importance sampling from q is

    ESS = 1 / E_q[(w/Z)²] = Z² / E_q[w²] = 1 / (1 + χ²(p‖q)).

* Reverse ESS estimates it from model samples x_n ~ q: (Σ w_n)² / (N Σ w_n²).
* Forward ESS estimates it from exact (reference) samples x_n ~ p. Since
  E_q[w²] = ∫ p̃²/q = Z E_p[w] and E_p[1/w] = ∫ p q/p̃ = 1/Z,

      ESS = Z / E_p[w] = 1 / (E_p[w] · E_p[1/w])  ≈  N² / (Σ_n w_n · Σ_n 1/w_n).

  The estimator is invariant to the scale of w (Z need not be known) and lies in (0, 1] by
  Cauchy-Schwarz. It sees modes of p that q misses, which reverse ESS cannot.
All estimates are computed in log space and drop non-finite log weights.
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
from jax.nn import logsumexp

from cmtjax.metrics.weights import clip_largest_log_weights, masked_log_weights

Array = jax.Array


def _centre(lw: Array, n: Array) -> Array:
  """Subtracts the largest finite log weight: ESS is scale-free, and this avoids cancelling
  large numbers (log w ~ log Z) in float32."""
  return lw - jnp.where(n > 0, jnp.max(lw), 0.0)


def _log_ess(lw: Array, n: Array) -> Array:
  lw = _centre(lw, n)
  return 2.0 * logsumexp(lw) - logsumexp(2.0 * lw) - jnp.log(n.astype(lw.dtype))


@jax.jit
def reverse_ess(log_w: Array) -> Array:
  """Reverse ESS fraction (Σw)² / (N Σw²) from model samples.

  Args:
    log_w: [batch] log p̃(x) - log q(x) at x ~ q.

  Returns:
    Scalar in [0, 1] (1/N for one dominant weight, 1 for equal weights; 0 if no entry is
    finite). N counts the finite entries only.
  """
  _, lw, n = masked_log_weights(log_w)
  # (Σw)² ≤ N Σw² exactly; the clip only removes float rounding above 1.
  return jnp.where(n > 0, jnp.minimum(jnp.exp(_log_ess(lw, n)), 1.0), 0.0)


@functools.partial(jax.jit, static_argnames="clip_fraction")
def reverse_ess_clipped(log_w: Array, clip_fraction: float = 1e-4) -> Array:
  """Reverse ESS after clipping the largest log weights.

  The k = floor(N · clip_fraction) largest of the N finite log weights are lowered to the
  (k+1)-th largest (:func:`cmtjax.metrics.weights.clip_largest_log_weights`, which states the
  rounding rule), then :func:`reverse_ess` is applied; with N · clip_fraction < 1 nothing is
  clipped.

  Args:
    log_w: [batch] log weights of model samples.
    clip_fraction: fraction of entries to clip, in [0, 1) (1e-4 by default).

  Returns:
    Scalar in [0, 1].
  """
  if not 0.0 <= clip_fraction < 1.0:
    raise ValueError(f"clip_fraction must be in [0, 1), got {clip_fraction}")
  return reverse_ess(clip_largest_log_weights(log_w, clip_fraction)[0])


@jax.jit
def forward_ess(log_w_ref: Array) -> Array:
  """Forward ESS fraction N² / (Σ w · Σ 1/w) from exact samples of the target.

  See the module docstring for the derivation: ESS = 1/(E_p[w] E_p[1/w]) at x ~ p. For
  p = N(0, 1) and q = N(μ, 1) it equals exp(-μ²), like the reverse ESS.

  Args:
    log_w_ref: [batch] log p̃(x) - log q(x) at reference samples x ~ p.

  Returns:
    Scalar in [0, 1] (0 if no entry is finite).
  """
  finite, lw, n = masked_log_weights(log_w_ref)
  lw = _centre(lw, n)
  neg = jnp.where(finite, -lw, -jnp.inf)
  log_n = jnp.log(n.astype(lw.dtype))
  log_ess = 2.0 * log_n - logsumexp(lw) - logsumexp(neg)
  # ≤ 1 by Cauchy-Schwarz; the clip only removes float rounding above 1.
  return jnp.where(n > 0, jnp.minimum(jnp.exp(log_ess), 1.0), 0.0)


@jax.jit
def forward_ess_without_top(log_w_ref: Array) -> Array:
  """:func:`forward_ess` with the reference sample of the largest weight left out.

  One reference configuration in a region the model barely covers (on alanine dipeptide, a
  single cis-amide frame among 3,968) can take the forward ESS to ~0 by itself; this figure
  beside the forward ESS tells one such sample from a model that misses the target broadly.
  """
  _, lw, _ = masked_log_weights(log_w_ref)  # non-finite entries at -inf: never the top
  return forward_ess(log_w_ref.at[jnp.argmax(lw)].set(jnp.nan))


@jax.jit
def top_log_weight_excess(log_w: Array) -> Array:
  """Largest finite log weight minus the median finite log weight (nats): how much more the
  most under-covered sample weighs than a typical one (0 if no entry is finite)."""
  finite, _, n = masked_log_weights(log_w)
  lw = jnp.where(finite, log_w, jnp.nan)
  return jnp.where(n > 0, jnp.nanmax(lw) - jnp.nanmedian(lw), 0.0)
