"""The CMT kernel and its parts: buffers, masks, multiplier rules, diagnostics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmtjax.cmt.diagnostics import fit_diagnostics, mode_diagnostics
from cmtjax.cmt.dual import make_buffer
from cmtjax.cmt.kernel import (StepMasks, draw_buffer, make_kernel, scheduled_multipliers,
                               target_multipliers)
from cmtjax.flows import FlowConfig, make_flow
from cmtjax.targets.base import Target

FLOW = make_flow(FlowConfig(dim=2, coupling="spline", n_layers=2, hidden=(8,), n_bins=4,
                            base_scale=2.0))
TARGET = Target(name="gauss", dim=2, log_prob=lambda x: -0.5 * jnp.sum((x - 1.0) ** 2, -1))


def _params():
  params = FLOW.init(jax.random.PRNGKey(0))
  # Move the flow off the identity so that a fit and a density change are visible.
  return jax.tree_util.tree_map(
      lambda a: a + 0.05 * jax.random.normal(jax.random.PRNGKey(1), a.shape), params)


def test_draw_buffer_pads_with_rows_flagged_invalid():
  buf = draw_buffer(FLOW, TARGET, _params(), jax.random.PRNGKey(2), 30, 50)
  assert buf.x.shape == (50, 2) and int(buf.n_valid) == 30
  assert bool(jnp.all(buf.valid[:30])) and not bool(jnp.any(buf.valid[30:]))
  same = draw_buffer(FLOW, TARGET, _params(), jax.random.PRNGKey(2), 30)
  np.testing.assert_array_equal(np.asarray(same.x), np.asarray(buf.x[:30]))


def test_masks_name_what_a_step_may_do():
  t, f = jnp.array(True), jnp.array(False)
  assert bool(StepMasks(t, f).solve) and not bool(StepMasks(t, f).keep_warm_start)
  assert not bool(StepMasks(t, t).solve) and bool(StepMasks(t, t).keep_warm_start)
  assert not bool(StepMasks(f, f).solve) and bool(StepMasks(f, f).keep_warm_start)


def test_multiplier_rules():
  table = jnp.array([[3.0, 0.0], [1.0, 0.5], [0.0, 0.0]])
  m = scheduled_multipliers(table, jnp.array(1))
  assert (float(m.lam), float(m.eta)) == (1.0, 0.5) and bool(m.converged)
  assert float(scheduled_multipliers(table, jnp.array(9)).lam) == 0.0  # past the end: the target
  z = target_multipliers()
  assert float(z.lam) == 0.0 and float(z.eta) == 0.0 and int(z.iterations) == 0


def test_kernel_fits_a_buffer_and_skips_an_empty_one_without_nan():
  """A valid buffer is fitted; without a valid entry the flow is untouched and every step
  counts as skipped; a fit left out on purpose (fit_ok False) leaves it too, counting none."""
  opt = optax.adam(1e-2)
  kernel = jax.jit(make_kernel(FLOW.log_prob, opt, n_grad_steps=5, batch_size=32))
  params = _params()
  buf = draw_buffer(FLOW, TARGET, params, jax.random.PRNGKey(3), 256)
  res = kernel(jax.random.PRNGKey(4), params, opt.init(params), buf, jnp.array(1.0),
               jnp.array(0.0))
  assert int(res.fit.n_skipped) == 0 and np.isfinite(float(res.fit.loss_last))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(res.params),
                                                      jax.tree.leaves(params)))
  np.testing.assert_allclose(float(jnp.sum(jnp.exp(res.log_wbar))), 1.0, rtol=1e-5)
  # No valid entry: parameters and optimiser state untouched, every step counted as skipped.
  empty = make_buffer(buf.x, jnp.full_like(buf.log_q, jnp.nan), buf.log_p)
  res = kernel(jax.random.PRNGKey(4), params, opt.init(params), empty, jnp.array(1.0),
               jnp.array(0.0))
  assert int(res.fit.n_skipped) == 5
  for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  res = kernel(jax.random.PRNGKey(4), params, opt.init(params), buf, jnp.array(1.0),
               jnp.array(0.0), None, jnp.array(False))
  assert int(res.fit.n_skipped) == 0 and np.isnan(float(res.fit.loss_last))
  for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fit_diagnostics_of_a_flow_that_did_not_move_are_zero():
  params = _params()
  buf = draw_buffer(FLOW, TARGET, params, jax.random.PRNGKey(5), 512)
  log_wbar = jnp.full((512,), -jnp.log(512.0))  # q_{i+1} = q_i
  d = fit_diagnostics(FLOW.log_prob, params, buf, log_wbar, 512)
  for name in ("realised_kl", "realised_entropy_drop", "fit_kl"):
    assert abs(float(getattr(d, name))) < 1e-4, d
  assert abs(float(d.realised_ess) - 1.0) < 1e-4, d  # equal weights: every entry counts
  # A moved flow: positive realised KL; on a subsample the same estimators, loosely.
  moved = jax.tree_util.tree_map(lambda a: 1.5 * a, params)
  full = fit_diagnostics(FLOW.log_prob, moved, buf, log_wbar, 512)
  half = fit_diagnostics(FLOW.log_prob, moved, buf, log_wbar, 256)
  assert float(full.realised_kl) > 0 and 0 < float(full.realised_ess) < 1
  assert abs(float(half.realised_kl) - float(full.realised_kl)) < 0.5 * float(full.realised_kl)


def test_mode_diagnostics_without_modes_are_minus_one():
  buf = draw_buffer(FLOW, TARGET, _params(), jax.random.PRNGKey(6), 64)
  d = mode_diagnostics(TARGET, buf, jnp.full((64,), -jnp.log(64.0)))
  assert [int(v) for v in d] == [-1, -1, -1]


def test_a_weight_cap_takes_the_peak_off_one_heavy_sample():
  """cmt.fit_weight_cap: with one buffer sample holding most of the weight (0.6), the plain
  fit raises log q there far more than a fit whose weights are capped at 10× the uniform
  share (that sample's share of the draws falls to ~0.09); the returned weights (the step's
  distribution) are the same either way. (A cap cannot help where one sample holds all but
  nothing: normalised again, it still holds everything.)"""
  opt = optax.adam(1e-2)
  params = _params()
  buf = draw_buffer(FLOW, TARGET, params, jax.random.PRNGKey(3), 256)
  heavy = make_buffer(buf.x, buf.log_q, buf.log_q.at[0].add(6.0))  # w̄_0 ≈ 0.6
  rises = {}
  for cap in (0.0, 10.0):
    kernel = jax.jit(make_kernel(FLOW.log_prob, opt, n_grad_steps=20, batch_size=32,
                                 weight_cap=cap))
    res = kernel(jax.random.PRNGKey(4), params, opt.init(params), heavy, jnp.array(0.0),
                 jnp.array(0.0))
    assert 0.5 < float(jnp.exp(res.log_wbar[0])) < 0.7
    x0 = heavy.x[:1]
    rises[cap] = float(FLOW.log_prob(res.params, x0)[0] - FLOW.log_prob(params, x0)[0])
  assert rises[0.0] > 0.5 and rises[10.0] < 0.5 * rises[0.0], rises

