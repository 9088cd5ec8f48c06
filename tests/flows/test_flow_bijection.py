"""Invariants of the coupling flow: identity at init, round trips, log-dets.

All tests use the flows of ``CASES`` and batches of ``BATCH`` rows, so that the
jitted functions of each flow compile once for the whole module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.flows import FlowConfig, make_flow
from flows_testing import (BATCH, CASES, gaussian_log_prob, perturbed_params,
                           small_flow)


@pytest.mark.parametrize("dim,coupling,permutation,base_scale,n_layers", CASES)
def test_init_is_identity_and_gaussian(dim, coupling, permutation, base_scale, n_layers):
  flow = small_flow(dim, coupling, permutation, base_scale, n_layers)
  params = flow.init(jax.random.key(0))
  z = 2.0 * jax.random.normal(jax.random.key(1), (BATCH, dim))
  x, log_det = flow.forward(params, z)
  np.testing.assert_allclose(x, base_scale * z, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(log_det, dim * np.log(base_scale), rtol=1e-6,
                             atol=1e-6)
  expected = gaussian_log_prob(x, base_scale)
  np.testing.assert_allclose(flow.log_prob(params, x), expected, rtol=1e-6,
                             atol=1e-5)
  # (sample_and_log_prob agrees with log_prob: see test_round_trip_and_log_prob.)


def test_default_config_parameters():
  cfg = FlowConfig(dim=4, base_scale=20.0)
  flow = make_flow(cfg)
  params = flow.init(jax.random.key(0))
  assert sorted(params) == sorted(f"coupling_{l}" for l in range(8))
  for layer in params.values():
    assert layer["Dense_0"]["kernel"].shape == (2, 128)
    assert layer["Dense_1"]["kernel"].shape == (128, 128)
    # 2 coordinates x (16 widths + 16 heights + 15 interior slopes).
    assert layer["Dense_2"]["kernel"].shape == (128, 2 * 47)
    assert layer["Dense_0"]["kernel"].dtype == jnp.float32
    assert not np.any(layer["Dense_2"]["kernel"])
    assert not np.any(layer["Dense_2"]["bias"])
    assert np.std(layer["Dense_1"]["kernel"]) > 0.01
  # Hidden layers are initialised differently in every layer.
  assert not np.allclose(params["coupling_0"]["Dense_1"]["kernel"],
                         params["coupling_1"]["Dense_1"]["kernel"])


@pytest.mark.parametrize("dim,coupling,permutation,base_scale,n_layers", CASES)
def test_round_trip_and_log_prob(dim, coupling, permutation, base_scale, n_layers):
  flow = small_flow(dim, coupling, permutation, base_scale, n_layers)
  params = perturbed_params(dim, coupling, permutation, base_scale, n_layers)
  z = jax.random.normal(jax.random.key(3), (BATCH, dim))
  x, ld_fwd = flow.forward(params, z)
  # The perturbed flow is far from the identity.
  assert float(jnp.max(jnp.abs(x / base_scale - z))) > 0.5
  assert float(jnp.std(ld_fwd)) > 0.2
  z_back, ld_inv = flow.inverse(params, x)
  np.testing.assert_allclose(z_back, z, atol=1e-4)
  np.testing.assert_allclose(ld_inv, -ld_fwd, rtol=1e-5, atol=1e-4)
  # log_prob of the flow's own samples equals the log_q returned with them.
  xs, log_q = flow.sample_and_log_prob(params, jax.random.key(5), BATCH)
  assert xs.shape == (BATCH, dim) and log_q.shape == (BATCH,)
  assert xs.dtype == jnp.float32 and log_q.dtype == jnp.float32
  np.testing.assert_allclose(flow.log_prob(params, xs), log_q, rtol=1e-5,
                             atol=2e-4)
  # ... and is not the base density any more.
  assert float(jnp.max(jnp.abs(log_q - gaussian_log_prob(xs, base_scale)))) > 0.5


@pytest.mark.parametrize("dim,coupling,permutation,base_scale,n_layers", CASES)
def test_log_det_matches_autodiff_jacobian(dim, coupling, permutation,
                                           base_scale, n_layers):
  flow = small_flow(dim, coupling, permutation, base_scale, n_layers)
  params = perturbed_params(dim, coupling, permutation, base_scale, n_layers)
  z = jax.random.normal(jax.random.key(4), (BATCH, dim))
  _, log_det = flow.forward(params, z)
  # One jacrev through the batched map (the spline has a hand-written reverse-mode
  # gradient, no forward mode): rows do not interact, so the Jacobian
  # of sample b is the [b, :, b, :] block.
  @jax.jit
  def per_sample_log_abs_det(p, zs):
    jac = jax.jacrev(lambda u: flow.forward(p, u)[0])(zs)
    return jnp.linalg.slogdet(jnp.einsum("bibj->bij", jac))

  sign, logabs = per_sample_log_abs_det(params, z)
  np.testing.assert_array_equal(sign, 1.0)  # couplings are increasing maps
  np.testing.assert_allclose(log_det, logabs, rtol=1e-4, atol=2e-4)
  # The inverse's log-det is the negative at the image points (round trip test).


@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=["spline", "affine"])
def test_far_outside_inputs_finite(case):
  dim, coupling, _, base_scale, _ = case
  flow = small_flow(*case)
  params = perturbed_params(*case)
  rng = np.random.RandomState(0)
  signs = rng.choice([-1.0, 0.0, 1.0], size=(8, dim))
  signs[0] = 1.0
  signs[1, 0] = 0.0
  factor = np.repeat([1e3, 1e4], 4)[:, None]
  x = factor * base_scale * signs + 0.3 * rng.randn(8, dim)
  x = jnp.asarray(np.concatenate([x, np.zeros((BATCH - 8, dim))]), jnp.float32)
  log_q = flow.log_prob(params, x)
  assert np.all(np.isfinite(log_q))
  # Far out the density is the Gaussian tail of the base (up to O(|x|) terms).
  assert np.all(log_q[:8] < -0.05 * factor[:, 0]**2)
  g_params, g_x = jax.jit(jax.grad(lambda p, xs: jnp.sum(flow.log_prob(p, xs)),
                                   argnums=(0, 1)))(params, x)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(g_params))
  assert np.all(np.isfinite(g_x))
  z, ld_inv = flow.inverse(params, x)
  x_fwd, ld = flow.forward(params, z)
  assert np.all(np.isfinite(x_fwd)) and np.all(np.isfinite(ld))
  np.testing.assert_allclose(x_fwd, x, rtol=1e-5, atol=5e-4)
  np.testing.assert_allclose(ld, -ld_inv, rtol=1e-5, atol=1e-4)
  if coupling == "spline":
    # Coordinates outside the box pass every spline unchanged.
    far = np.abs(np.asarray(x)) > 100.0
    np.testing.assert_allclose(np.asarray(z)[far],
                               np.asarray(x)[far] / base_scale, rtol=1e-7)


def test_batch_shape_checked():
  flow = small_flow(*CASES[1])
  params = flow.init(jax.random.key(0))
  with pytest.raises(ValueError, match=r"\[batch, 3\]"):
    flow.log_prob(params, jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match=r"\[batch, 3\]"):
    flow.forward(params, jnp.zeros((3,)))
