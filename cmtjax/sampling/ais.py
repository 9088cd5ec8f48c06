"""Annealed importance sampling (AIS) from a flow q toward q^{1−α} p̃^α, with HMC moves.

With α = 1 the final density is p̃ (AIS estimates log Z); with α = 2 it is p̃²/q, the
proposal that minimises the variance of the importance weights p̃/q (the FAB target). The
intermediate densities are geometric,

    log f_j = log q + α β_j (log p̃ − log q),     0 = β_0 < β_1 < … < β_{M+1} = 1,

with M intermediate distributions. Chains start at x_0 ~ q; for j = 1 … M the weight gains
log f_j − log f_{j−1} at the current position and then the chains move by ``n_hmc_steps`` HMC
steps that leave f_j invariant; a last increment reaches f_{M+1}. Then E[w] = Z_{M+1} / Z_q,
i.e. ∫ p̃ for α = 1 and ∫ p̃²/q for α = 2 (q is normalised).

Cost (target evaluations, each one log p̃ with its gradient): ``n · (1 + M · H · L)`` for n
chains, H HMC steps of L leapfrog steps per intermediate distribution: one at x_0, one per
leapfrog step; the weight increments reuse cached values. :func:`ais_target_evals` returns it.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.sampling.hmc import LogDensityFn, Point, hmc_step, make_point_fn

Array = jax.Array

SPACINGS = ("linear", "geometric")


def ais_target_evals(n_chains: int, n_intermediate: int, n_hmc_steps: int,
                     n_leapfrog: int) -> int:
  """Target evaluations of one AIS run: ``n · (1 + M · H · L)``."""
  return int(n_chains) * (1 + int(n_intermediate) * int(n_hmc_steps) * int(n_leapfrog))


def ais_betas(n_intermediate: int, spacing: str = "linear") -> np.ndarray:
  """β_0 = 0 < β_1 < … < β_{M+1} = 1: ``[M + 2]`` float64.

  Args:
    n_intermediate: M ≥ 0.
    spacing: ``"linear"`` (β_j = j/(M+1)) or ``"geometric"`` (β_j = 10^{−2 (M+1−j)/M} for
      j ≥ 1: from 0.01 to 1, denser near q).
  """
  m = int(n_intermediate)
  if m < 0:
    raise ValueError(f"n_intermediate must be >= 0, got {m}")
  if spacing == "linear":
    return np.linspace(0.0, 1.0, m + 2)
  if spacing == "geometric":
    if m == 0:
      return np.array([0.0, 1.0])
    j = np.arange(1, m + 2, dtype=np.float64)
    return np.concatenate([[0.0], 10.0 ** (-2.0 * (m + 1 - j) / m)])
  raise ValueError(f"unknown AIS spacing {spacing!r}; known: {', '.join(SPACINGS)}")


class AISResult(NamedTuple):
  """Output of :func:`ais`.

  Attributes:
    x: ``[n, dim]`` final positions.
    log_w: ``[n]`` log AIS weights (−inf where any increment was not finite).
    log_q: ``[n]`` log q at the final positions.
    log_p: ``[n]`` log p̃ at the final positions.
    x0_log_w: ``[n]`` log p̃ − log q at the starting samples x_0 ~ q (plain importance
      weights, free by-products of the run).
    acceptance: ``[M]`` mean HMC acceptance probability at each intermediate distribution.
    log_z: scalar, log mean w (estimates log Z_{M+1}; finite weights only).
  """

  x: Array
  log_w: Array
  log_q: Array
  log_p: Array
  x0_log_w: Array
  acceptance: Array
  log_z: Array


def ais(key: Array, x0: Array, log_q_fn: LogDensityFn, log_p_fn: LogDensityFn, *,
        betas: Array, step_sizes: Array, alpha: float = 2.0, n_hmc_steps: int = 1,
        n_leapfrog: int = 5) -> AISResult:
  """Runs AIS from samples of q toward q^{1−α} p̃^α.

  Args:
    key: PRNG key.
    x0: ``[n, dim]`` samples of q.
    log_q_fn: ``[n, dim] -> [n]`` normalised model log density (rows independent;
      differentiable in x).
    log_p_fn: ``[n, dim] -> [n]`` unnormalised target log density (rows independent).
    betas: ``[M + 2]`` schedule from 0 to 1 (see :func:`ais_betas`).
    step_sizes: ``[M]`` HMC step size at each intermediate distribution.
    alpha: exponent α of the final density (1: p̃, 2: p̃²/q).
    n_hmc_steps: H, HMC steps per intermediate distribution (static).
    n_leapfrog: L, leapfrog steps per HMC step (static).

  Returns:
    An :class:`AISResult`; the run costs :func:`ais_target_evals` target evaluations.
  """
  chex.assert_rank(x0, 2)
  betas = jnp.asarray(betas, x0.dtype)
  m = betas.shape[0] - 2
  chex.assert_shape(step_sizes, (m,))
  point_fn = make_point_fn(log_q_fn, log_p_fn)
  point = point_fn(x0)
  x0_log_w = point.log_p - point.log_q
  log_w = jnp.zeros(x0.shape[:1], x0.dtype)

  def transition(carry, inp):
    pt, lw = carry
    b_prev, b_cur, eps, k = inp
    lw = lw + alpha * (b_cur - b_prev) * (pt.log_p - pt.log_q)

    def move(c, kk):
      c, info = hmc_step(kk, c, point_fn, alpha * b_cur, eps, n_leapfrog)
      return c, jnp.mean(info.acceptance)

    pt, acc = jax.lax.scan(move, pt, jax.random.split(k, n_hmc_steps))
    return (pt, lw), jnp.mean(acc)

  keys = jax.random.split(key, max(m, 1))[:m]
  (point, log_w), acceptance = jax.lax.scan(
      transition, (point, log_w),
      (betas[:m], betas[1:m + 1], jnp.asarray(step_sizes, x0.dtype), keys))
  log_w = log_w + alpha * (betas[m + 1] - betas[m]) * (point.log_p - point.log_q)
  log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
  finite = jnp.isfinite(log_w)
  n_ok = jnp.maximum(jnp.sum(finite), 1).astype(log_w.dtype)
  log_z = jax.nn.logsumexp(jnp.where(finite, log_w, -jnp.inf)) - jnp.log(n_ok)
  return AISResult(x=point.x, log_w=log_w, log_q=point.log_q, log_p=point.log_p,
                   x0_log_w=x0_log_w, acceptance=acceptance, log_z=log_z)


def log_z_of_p(result: AISResult, alpha: float) -> Array:
  """log Z of p̃ from an AIS run toward f = q^{1−α} p̃^α (FAB's estimate for α = 2).

  Since f (p̃/q)^{1−α} = p̃, Z_p = Z_f · E_f[(p̃/q)^{1−α}], estimated with the self-normalised
  AIS weights at the final positions:

      log Z_p ≈ log Z_f + logsumexp_n(log w̄_n + (1 − α)(log p̃_n − log q_n)).

  For α = 1 this is ``result.log_z``.

  Args:
    result: the :func:`ais` output.
    alpha: the α of that run.

  Returns:
    Scalar estimate of log ∫ p̃.
  """
  finite = jnp.isfinite(result.log_w)
  log_wbar = jnp.where(finite, result.log_w, -jnp.inf)
  log_wbar = log_wbar - jax.nn.logsumexp(log_wbar)
  ratio = jnp.where(finite, (1.0 - alpha) * (result.log_p - result.log_q), 0.0)
  return result.log_z + jax.nn.logsumexp(jnp.where(finite, log_wbar + ratio, -jnp.inf))


def adapt_step_sizes(step_sizes: Array, acceptance: Array, target_acceptance: float,
                     rate: float, min_step: float = 1e-5, max_step: float = 10.0) -> Array:
  """Multiplicative step-size control toward a target acceptance, per distribution.

  log ε_j ← log ε_j + rate · (acceptance_j − target), clipped to [min_step, max_step]; a
  non-finite acceptance shrinks the step.

  Args:
    step_sizes: ``[M]`` current step sizes.
    acceptance: ``[M]`` mean acceptance probabilities of the last run.
    target_acceptance: desired mean acceptance in (0, 1).
    rate: adaptation rate (0 freezes the step sizes).
    min_step, max_step: bounds of the step sizes.

  Returns:
    ``[M]`` new step sizes.
  """
  delta = jnp.where(jnp.isfinite(acceptance), acceptance - target_acceptance, -1.0)
  return jnp.clip(step_sizes * jnp.exp(rate * delta), min_step, max_step)



