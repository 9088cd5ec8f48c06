"""The flow density is normalised, matches its samples, and has correct gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flows_testing import (BATCH, CASES, SMOOTH_PERTURBATION, gaussian_log_prob,
                           perturb, perturbed_params, small_flow)

CASES_2D = [c for c in CASES if c[0] == 2]


@pytest.mark.parametrize("case", CASES_2D, ids=[c[1] for c in CASES_2D])
def test_density_integrates_to_one_and_matches_samples(case):
  dim, coupling, _, base_scale, _ = case
  flow = small_flow(*case)
  params = perturb(flow.init(jax.random.key(0)), jax.random.key(100),
                   SMOOTH_PERTURBATION[coupling])
  # Midpoint rule on [-L, L]^2; the flow is the identity outside the spline box
  # (in y units) and its tails are Gaussian, so L = 9 base scales holds all mass.
  n, half = 300, 9.0 * base_scale
  h = 2.0 * half / n
  t = -half + h * (np.arange(n) + 0.5)
  grid = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, dim)
  q = np.exp(np.asarray(flow.log_prob(params, jnp.asarray(grid, jnp.float32)),
                        np.float64))
  mass = q.sum() * h * h
  assert abs(mass - 1.0) < 1e-3
  # The flow is not the base: its mean differs from 0 by much more than the
  # tolerance below.
  mean_q = (grid * q[:, None]).sum(0) * h * h
  assert np.max(np.abs(mean_q)) > 0.05 * base_scale
  # Samples have that mean (batches of BATCH reuse the compiled sampler).
  keys = jax.random.split(jax.random.key(7), 400)
  x = np.concatenate([np.asarray(flow.sample_and_log_prob(params, k, BATCH)[0])
                      for k in keys]).astype(np.float64)
  stderr = x.std(0) / np.sqrt(x.shape[0])
  np.testing.assert_array_less(np.abs(x.mean(0) - mean_q), 5.0 * stderr)


def test_importance_sampling_mass_in_3d():
  case = CASES[1]
  dim, _, _, base_scale, _ = case
  flow = small_flow(*case)
  params = perturbed_params(*case)
  # E_{x ~ N(0, s^2 I)}[q(x) / N(x; 0, s^2 I)] = integral of q = 1, with a
  # proposal broader than q. Batches of BATCH rows reuse the compiled log_prob.
  s = 1.5 * base_scale
  key = jax.random.key(11)
  log_ratios = []
  for _ in range(100):
    key, sub = jax.random.split(key)
    x = s * jax.random.normal(sub, (BATCH, dim))
    log_ratios.append(np.asarray(flow.log_prob(params, x) - gaussian_log_prob(x, s)))
  ratio = np.exp(np.concatenate(log_ratios).astype(np.float64))
  estimate = ratio.mean()
  stderr = ratio.std() / np.sqrt(ratio.size)
  assert stderr < 0.03
  assert abs(estimate - 1.0) < 4.0 * stderr


@jax.jit
def _unit_direction(params, key):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  v = [jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)]
  norm = jnp.sqrt(sum(jnp.sum(u * u) for u in v))
  return jax.tree.unflatten(tree, [u / norm for u in v])


@jax.jit
def _axpy(a, x, y):
  return jax.tree.map(lambda u, v: a * u + v, x, y)


@jax.jit
def _dot(x, y):
  return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


@pytest.mark.slow  # two gradient compiles of a spline flow: ~6-25 s on a shared 2-core machine
def test_parameter_gradients_match_finite_differences():
  case = CASES[0]
  dim = case[0]
  flow = small_flow(*case)
  params = perturbed_params(*case)
  key = jax.random.key(13)
  x_data = jax.random.normal(jax.random.key(14), (BATCH, dim))

  # Reverse-KL-like objective through reparameterised samples, and a
  # forward-KL-like objective through log_prob.
  def reverse(p):
    x, log_q = flow.sample_and_log_prob(p, key, BATCH)
    return jnp.mean(log_q) + jnp.mean(jnp.sin(x))

  def forward(p):
    return -jnp.mean(flow.log_prob(p, x_data))

  v = _unit_direction(params, jax.random.key(15))
  eps = 1e-3
  for fn in (reverse, forward):
    grad = jax.jit(jax.grad(fn))(params)
    analytic = float(_dot(grad, v))
    numeric = (float(fn(_axpy(eps, v, params))) -
               float(fn(_axpy(-eps, v, params)))) / (2 * eps)
    assert abs(analytic) > 1e-3
    assert abs(analytic - numeric) < 2e-2 * abs(analytic) + 1e-3


def test_vmap_over_params_and_jit_of_sampling():
  case = CASES[2]
  flow = small_flow(*case)
  p1 = perturbed_params(*case, seed=0)
  p2 = perturbed_params(*case, seed=1)
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), p1, p2)
  x = jax.random.normal(jax.random.key(16), (BATCH, case[0]))
  both = jax.vmap(flow.log_prob, in_axes=(0, None))(stacked, x)
  np.testing.assert_allclose(both[0], flow.log_prob(p1, x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(both[1], flow.log_prob(p2, x), rtol=1e-5, atol=1e-5)
  # n is static: sampling works inside an outer jit with n fixed by the caller.
  sampler = jax.jit(lambda p, k: flow.sample_and_log_prob(p, k, BATCH))
  xs, log_q = sampler(p1, jax.random.key(17))
  x_ref, log_q_ref = flow.sample_and_log_prob(p1, jax.random.key(17), BATCH)
  np.testing.assert_allclose(xs, x_ref, rtol=1e-6)
  np.testing.assert_allclose(log_q, log_q_ref, rtol=1e-6)


def test_distrax_backend_is_the_same_flow():
  """The reference spline backend (distrax) and cmtjax's batched spline give one flow."""
  ours = small_flow(5, "spline", "random", 2.0, 3)
  ref = small_flow(5, "spline", "random", 2.0, 3, spline_backend="distrax")
  params = perturb(ours.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.1)
  x, log_q = ours.sample_and_log_prob(params, jax.random.PRNGKey(2), BATCH)
  x_ref, log_q_ref = ref.sample_and_log_prob(params, jax.random.PRNGKey(2), BATCH)
  np.testing.assert_allclose(np.asarray(x), np.asarray(x_ref), atol=1e-5)
  np.testing.assert_allclose(np.asarray(log_q), np.asarray(log_q_ref), atol=1e-4)
  np.testing.assert_allclose(np.asarray(ref.log_prob(params, 3.0 * x)),
                             np.asarray(ours.log_prob(params, 3.0 * x)), atol=1e-4)


@pytest.mark.parametrize("case", CASES_2D, ids=[c[1] for c in CASES_2D])
def test_initial_forward_is_the_base_scaling_of_the_initial_flow(case):
  flow = small_flow(*case)
  z = jax.random.normal(jax.random.PRNGKey(0), (16, case[0]))
  x, ld = flow.forward(flow.init(jax.random.PRNGKey(1)), z)
  x0, ld0 = flow.initial_forward(z)
  np.testing.assert_allclose(np.asarray(x0), np.asarray(x), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(ld0), np.asarray(ld), atol=1e-5)
