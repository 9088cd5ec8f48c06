"""Batched Hamiltonian Monte Carlo on a two-part log density, for annealed importance sampling.

AIS between a flow q and a target p̃ moves chains under intermediate densities

    log f_c(x) = log q(x) + c · (log p̃(x) − log q(x)),        c ∈ [0, α],

whose two parts change only through the scalar c. A :class:`Point` caches log q, log p̃ and
both gradients at each chain's position, so moving to the next intermediate density needs no
new evaluation: every leapfrog step evaluates log p̃ and its gradient exactly once per chain
(one *target evaluation*), and nothing else touches the target. That makes the cost of an
AIS run a static number (see :func:`cmtjax.sampling.ais.ais_target_evals`).

Leapfrog (velocity Verlet) with unit mass matrix, momentum p ~ N(0, I):

    p ← p + ε/2 ∇log f(x);  x ← x + ε p;  p ← p + ε/2 ∇log f(x)     (L times)

followed by a Metropolis test on H = −log f(x) + ½|p|². Proposals with a non-finite energy
are rejected. The chains (rows) are independent; they share one step size.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

Array = jax.Array
LogDensityFn = Callable[[Array], Array]


class Point(NamedTuple):
  """Chain positions with their cached densities (all rows independent).

  Attributes:
    x: ``[n, dim]`` positions.
    log_q: ``[n]`` log q(x).
    grad_log_q: ``[n, dim]`` ∇_x log q(x).
    log_p: ``[n]`` log p̃(x).
    grad_log_p: ``[n, dim]`` ∇_x log p̃(x).
  """

  x: Array
  log_q: Array
  grad_log_q: Array
  log_p: Array
  grad_log_p: Array

  def log_f(self, c: Array) -> Array:
    """log f_c = log q + c (log p̃ − log q): ``[n]``."""
    return self.log_q + c * (self.log_p - self.log_q)

  def grad_log_f(self, c: Array) -> Array:
    """∇ log f_c: ``[n, dim]``."""
    return self.grad_log_q + c * (self.grad_log_p - self.grad_log_q)


def _rowwise_value_and_grad(fn: LogDensityFn, x: Array) -> tuple[Array, Array]:
  """Values ``[n]`` and per-row gradients ``[n, dim]`` of a row-independent ``fn``."""
  values, vjp = jax.vjp(fn, x)
  (grads,) = vjp(jnp.ones_like(values))
  return values, grads


def make_point_fn(log_q_fn: LogDensityFn, log_p_fn: LogDensityFn) -> Callable[[Array], Point]:
  """``x: [n, dim] -> Point``: one evaluation of log p̃ (with gradient) per row.

  Args:
    log_q_fn: ``[n, dim] -> [n]`` model log density (rows independent).
    log_p_fn: ``[n, dim] -> [n]`` unnormalised target log density (rows independent).
  """

  def point(x: Array) -> Point:
    lq, glq = _rowwise_value_and_grad(log_q_fn, x)
    lp, glp = _rowwise_value_and_grad(log_p_fn, x)
    return Point(x=x, log_q=lq, grad_log_q=glq, log_p=lp, grad_log_p=glp)

  return point


class HMCInfo(NamedTuple):
  """Diagnostics of one HMC step.

  Attributes:
    acceptance: ``[n]`` Metropolis acceptance probability of each chain (0 if non-finite).
    accepted: ``[n]`` bool, whether each chain moved.
  """

  acceptance: Array
  accepted: Array


def hmc_step(key: Array, point: Point, point_fn: Callable[[Array], Point], c: Array,
             step_size: Array, n_leapfrog: int) -> tuple[Point, HMCInfo]:
  """One HMC step on log f_c for every chain.

  Args:
    key: PRNG key.
    point: current chains (``x: [n, dim]``) with cached densities.
    point_fn: from :func:`make_point_fn` (called ``n_leapfrog`` times).
    c: scalar, the weight of log p̃ − log q in log f_c.
    step_size: scalar leapfrog step ε.
    n_leapfrog: L, leapfrog steps per trajectory (static).

  Returns:
    ``(point, HMCInfo)``. Costs ``n_leapfrog`` target evaluations per chain.
  """
  chex.assert_rank(point.x, 2)
  k_mom, k_acc = jax.random.split(key)
  n = point.x.shape[0]
  p0 = jax.random.normal(k_mom, point.x.shape, point.x.dtype)

  def leapfrog(carry, _):
    pt, p = carry
    p_half = p + 0.5 * step_size * pt.grad_log_f(c)
    new = point_fn(pt.x + step_size * p_half)
    return (new, p_half + 0.5 * step_size * new.grad_log_f(c)), None

  (prop, p1), _ = jax.lax.scan(leapfrog, (point, p0), None, length=n_leapfrog)
  h0 = -point.log_f(c) + 0.5 * jnp.sum(p0 * p0, axis=-1)
  h1 = -prop.log_f(c) + 0.5 * jnp.sum(p1 * p1, axis=-1)
  log_acc = jnp.minimum(h0 - h1, 0.0)
  ok = jnp.isfinite(log_acc) & jnp.all(jnp.isfinite(prop.x), axis=-1)
  ok = ok & jnp.all(jnp.isfinite(prop.grad_log_p), axis=-1)
  acceptance = jnp.where(ok, jnp.exp(log_acc), 0.0)
  accepted = jax.random.uniform(k_acc, (n,), acceptance.dtype) < acceptance

  def pick(a, b):
    mask = accepted.reshape((n,) + (1,) * (a.ndim - 1))
    return jnp.where(mask, a, b)

  new_point = jax.tree_util.tree_map(pick, prop, point)
  return new_point, HMCInfo(acceptance=acceptance, accepted=accepted)
