"""AIS with HMC moves and the replay buffer: log Z against closed forms, exact costs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.sampling import (adapt_step_sizes, ais, ais_betas, ais_target_evals, buffer_add,
                             buffer_adjust, buffer_init, buffer_sample, hmc_step, log_z_of_p,
                             make_point_fn)
from cmtjax.targets import make_target
from methods_testing import counting, gauss_target

S_Q = 2.0  # q = N(0, S_Q² I) in 2-D


def _log_q(x):
  return -0.5 * jnp.sum((x / S_Q) ** 2, -1) - 2 * math.log(S_Q) - math.log(2 * math.pi)


def _x0(key, n):
  return S_Q * jax.random.normal(key, (n, 2))


def test_ais_log_z_of_the_double_well_and_its_exact_cost():
  """α = 1: AIS from N(0, 4I) to the double well recovers its quadrature log Z.

  Tolerance 0.05 nats with 16384 chains, M = 8, L = 5: over 8 seeds the error had mean
  −0.002 and standard deviation 0.013, so the bound is about 4 σ.
  """
  target, calls, _ = counting(make_target("double_well2d"))
  m, h, l, n = 8, 1, 5, 16384
  run = jax.jit(lambda k: ais(k, _x0(jax.random.fold_in(k, 1), n), _log_q, target.log_prob,
                              betas=ais_betas(m), step_sizes=jnp.full((m,), 0.3), alpha=1.0,
                              n_hmc_steps=h, n_leapfrog=l))
  res = run(jax.random.PRNGKey(0))
  assert abs(float(res.log_z) - target.log_Z) < 0.05
  assert calls.value == ais_target_evals(n, m, h, l) == n * (1 + m * h * l)
  acc = np.asarray(res.acceptance)
  assert acc.shape == (m,) and np.all((acc > 0.3) & (acc <= 1.0))
  # Without moves (plain importance sampling) the estimate is much worse on this target.
  assert float(jnp.std(res.log_w)) < float(jnp.std(res.x0_log_w))


def test_ais_toward_p2_over_q_matches_the_gaussian_closed_form():
  """α = 2: E[w] = ∫ p̃²/q; for p = N(μ, I), q = N(0, 4I) it is known in closed form.

  Tolerance 0.03 nats with 8192 chains, M = 8, H = 2, L = 3: over 8 seeds the error had
  mean −0.001 and standard deviation 0.006 (about 5 σ).
  """
  target = gauss_target(mu=(1.0, -0.5), s=1.0)
  a = 1.0 - 1.0 / (2 * S_Q**2)
  exact = sum(math.log(math.sqrt(2 * math.pi * S_Q**2) / (2 * math.pi)) + 0.5 * math.log(math.pi / a)
              + m**2 / a - m**2 for m in (1.0, -0.5))
  m, h, l = 8, 2, 3
  res = jax.jit(lambda k: ais(k, _x0(jax.random.fold_in(k, 1), 8192), _log_q, target.log_prob,
                              betas=ais_betas(m), step_sizes=jnp.full((m,), 0.5),
                              alpha=2.0, n_hmc_steps=h, n_leapfrog=l))(jax.random.PRNGKey(1))
  assert abs(float(res.log_z) - exact) < 0.03


def test_fab_log_z_estimate_of_the_double_well():
  """FAB's estimate: AIS toward p̃²/q (α = 2) from N(0, 4I), then log Z_p = log Z_f +
  log E_f[q/p̃]. Tolerance 0.08 nats against the quadrature log Z with 16384 chains, M = 8,
  L = 5: over 8 seeds the error had mean 0.002 and standard deviation 0.022 (about 3.7 σ).
  """
  target = make_target("double_well2d")
  res = jax.jit(lambda k: ais(k, _x0(jax.random.fold_in(k, 1), 16384), _log_q, target.log_prob,
                              betas=ais_betas(8), step_sizes=jnp.full((8,), 0.3), alpha=2.0,
                              n_leapfrog=5))(jax.random.PRNGKey(2))
  assert abs(float(log_z_of_p(res, 2.0)) - target.log_Z) < 0.08
  assert float(log_z_of_p(res, 1.0)) == float(res.log_z)


def test_hmc_acceptance_tends_to_one_as_the_step_shrinks():
  """Leapfrog energy error is O(ε²): mean acceptance → 1 and 1 − acc shrinks ~ε²."""
  target = gauss_target(s=0.7)
  point_fn = make_point_fn(_log_q, target.log_prob)
  pt = point_fn(_x0(jax.random.PRNGKey(0), 512))
  rej = []
  for eps in (0.2, 0.1):
    _, info = hmc_step(jax.random.PRNGKey(1), pt, point_fn, jnp.float32(1.0), eps, 4)
    rej.append(1.0 - float(jnp.mean(info.acceptance)))
  assert rej[1] < 0.02 and rej[1] < rej[0] / 2.5


def test_ais_betas_and_step_size_control():
  np.testing.assert_allclose(ais_betas(3), [0, 0.25, 0.5, 0.75, 1.0])
  g = ais_betas(4, "geometric")
  assert g[0] == 0 and g[-1] == 1 and g[1] == pytest.approx(0.01) and np.all(np.diff(g) > 0)
  with pytest.raises(ValueError, match="spacing"):
    ais_betas(3, "cubic")
  new = adapt_step_sizes(jnp.array([1.0, 1.0, 1.0]), jnp.array([0.9, 0.65, jnp.nan]), 0.65, 0.5)
  np.testing.assert_allclose(new, [math.exp(0.125), 1.0, math.exp(-0.5)], rtol=1e-6)


def test_buffer_add_sample_adjust():
  buf = buffer_init(6, 2)
  x = jnp.arange(6.0).reshape(3, 2)
  buf = buffer_add(buf, x, jnp.log(jnp.array([1.0, 2.0, 7.0])), jnp.zeros(3))
  assert int(buf.size) == 3 and int(buf.position) == 3
  assert np.all(np.isneginf(np.asarray(buf.log_w[3:])))
  # Drawing 1 slot ∝ w: frequencies 0.1, 0.2, 0.7; empty slots never drawn.
  idx = jax.vmap(lambda k: buffer_sample(buf, k, 1)[0][0])(
      jax.random.split(jax.random.PRNGKey(0), 20_000))
  freq = np.bincount(np.asarray(idx), minlength=6) / 20_000
  np.testing.assert_allclose(freq, [0.1, 0.2, 0.7, 0, 0, 0], atol=0.015)
  # Without replacement: 3 distinct valid slots, then invalid ones.
  idx, ok = buffer_sample(buf, jax.random.PRNGKey(1), 4)
  assert len(set(np.asarray(idx).tolist())) == 4 and int(ok.sum()) == 3
  # Re-weighting to a new flow: log w += log q_old − log q_new.
  adj = buffer_adjust(buf, jnp.array([2, 0]), jnp.array([0.5, -1.0]))
  np.testing.assert_allclose(adj.log_w[:3], [1.0, math.log(2.0), math.log(7.0) - 0.5], rtol=1e-6)
  np.testing.assert_allclose(adj.log_q[:3], [-1.0, 0.0, 0.5])
  # Circular: the third block overwrites the first; non-finite weights are stored as −inf.
  buf = buffer_add(buf, x + 10, jnp.array([0.0, jnp.nan, 0.0]), jnp.zeros(3))
  buf = buffer_add(buf, x + 20, jnp.zeros(3), jnp.zeros(3))
  assert int(buf.size) == 6 and int(buf.position) == 3
  np.testing.assert_allclose(buf.x[0], [20.0, 21.0])
  assert np.isneginf(float(buf.log_w[4]))
  with pytest.raises(ValueError, match="multiple"):
    buffer_add(buf, jnp.zeros((4, 2)), jnp.zeros(4), jnp.zeros(4))
