"""Anchored CMT steps (cmt.anchor): the fit's distribution is the path's ideal intermediate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.cmt.dual import make_buffer, normalised_log_weights
from cmtjax.cmt.paths import PathState, update_path
from cmtjax.flows import FlowConfig, make_flow
from cmtjax.methods.cmt import CMTConfig, anchor_shift, make_cmt
from methods_testing import gauss_target, small_flow


def _buffer(n=512, seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  x = jax.random.normal(k[0], (n, 2))
  log_q = jax.random.normal(k[1], (n,)) * 2.0 - 3.0
  log_p = jax.random.normal(k[2], (n,)) * 3.0 - 900.0  # a molecule-sized constant
  log_q0 = jax.random.normal(k[3], (n,)) * 1.5 - 5.0
  return make_buffer(x, log_q, log_p), log_q0


@pytest.mark.parametrize("lam,eta", [(1.5, 0.3), (0.2, 2.0), (8.0, 0.0)])
def test_full_anchor_weights_are_those_of_the_next_ideal_intermediate(lam, eta):
  """At ρ = 1 the fit's weights are q_{i+1}/q̂_i with q_{i+1} ∝ q_0^{1−β'} p̃^{α'β'} the
  path's own next model ((α', β') by the bookkeeping), whatever the fitted flow is; at
  ρ = 1/2 the log weights lie halfway between the relative and the ideal ones."""
  buf, log_q0 = _buffer()
  path = PathState(alpha=jnp.asarray(0.7), beta=jnp.asarray(0.4))
  lam, eta = jnp.asarray(lam), jnp.asarray(eta)
  nxt = update_path(path, lam, eta)
  ideal = (1 - nxt.beta) * log_q0 + nxt.alpha * nxt.beta * buf.log_p - buf.log_q
  want = np.asarray(ideal - jax.scipy.special.logsumexp(ideal))
  rel = normalised_log_weights(buf, lam, eta)

  def anchored(rho):
    lw = rel + anchor_shift(buf, path, log_q0, lam, eta, rho)
    return np.asarray(lw - jax.scipy.special.logsumexp(lw))

  np.testing.assert_allclose(anchored(1.0), want, atol=2e-4)
  half = anchored(0.5)
  mid = 0.5 * (np.asarray(rel) + want)
  # Equal up to a constant (the normalisation).
  np.testing.assert_allclose(half - half.mean(), mid - mid.mean(), atol=2e-4)
  assert float(np.max(np.abs(np.asarray(rel) - want))) > 0.5  # the test can tell them apart


def test_the_shift_vanishes_where_the_flow_is_the_ideal_model_and_at_the_target():
  buf, log_q0 = _buffer()
  path = PathState(alpha=jnp.asarray(0.8), beta=jnp.asarray(0.5))
  ideal_flow = buf._replace(log_q=(1 - 0.5) * log_q0 + 0.8 * 0.5 * buf.log_p)
  shift = anchor_shift(ideal_flow, path, log_q0, jnp.asarray(2.0), jnp.asarray(0.5), 1.0)
  assert float(jnp.max(jnp.abs(shift))) < 1e-3
  at_target = anchor_shift(buf, path, log_q0, jnp.asarray(0.0), jnp.asarray(0.0), 1.0)
  assert float(jnp.max(jnp.abs(at_target))) == 0.0


def test_rows_outside_q0_get_no_weight_and_invalid_rows_stay_out():
  buf, log_q0 = _buffer(n=8)
  log_q0 = log_q0.at[2].set(-jnp.inf)
  buf = buf._replace(valid=buf.valid.at[5].set(False))
  path = PathState(alpha=jnp.asarray(1.0), beta=jnp.asarray(0.3))
  shift = anchor_shift(buf, path, log_q0, jnp.asarray(1.0), jnp.asarray(0.0), 1.0)
  assert np.all(np.isfinite(np.asarray(shift)))
  assert float(shift[2]) == -1e4 and float(shift[5]) == -1e4
  # At β = 1 q_0 drops out of the ideal model: the row outside it is an ordinary one.
  done = anchor_shift(buf, PathState(jnp.asarray(0.9), jnp.asarray(1.0)), log_q0,
                      jnp.asarray(1.0), jnp.asarray(0.0), 1.0)
  assert abs(float(done[2])) < 100


def test_anchored_run_starts_as_the_relative_one_then_differs():
  """Step 0 starts at q_0 (the shift is ~0: the same step ESS and fit ESS); on later steps,
  with β > 0 and a finite fit, the anchored fit's weights differ from the relative ones."""
  flow, target = small_flow(), gauss_target()
  cfg = CMTConfig(n_samples=256, n_grad_steps=5, batch_size=64, eps_tr=0.05, eps_ent=0.05,
                  anchor=1.0)  # small steps: λ > 0 for several
  method = make_cmt(cfg, flow, target, n_steps=4)
  state = method.init(jax.random.PRNGKey(0), flow.init(jax.random.PRNGKey(1)))
  step = jax.jit(method.step)
  infos = []
  for i in range(4):
    state, info = step(jax.random.PRNGKey(10 + i), state)
    infos.append(info)
  assert abs(float(infos[0].fit_ess) - float(infos[0].step_ess)) < 1e-3
  assert 0 < float(infos[1].beta) < 1 and float(infos[1].lam) > 0
  assert any(abs(float(i.fit_ess) - float(i.step_ess)) > 1e-3 for i in infos[1:])
  assert all(np.isfinite(float(i.loss)) for i in infos)


def test_anchor_is_validated_and_needs_the_initial_density():
  with pytest.raises(ValueError, match="cmt.anchor"):
    CMTConfig(anchor=1.5)
  flow = small_flow()._replace(initial_log_prob=None)
  with pytest.raises(ValueError, match="initial_log_prob"):
    make_cmt(CMTConfig(anchor=0.5), flow, gauss_target(), n_steps=2)


def test_cartesian_initial_log_prob_is_log_prob_at_init():
  flow = make_flow(FlowConfig(dim=3, coupling="spline", n_layers=2, hidden=(8,), n_bins=4,
                              base_scale=1.7))
  x = jax.random.normal(jax.random.PRNGKey(2), (64, 3)) * 2.0
  np.testing.assert_allclose(np.asarray(flow.initial_log_prob(x)),
                             np.asarray(flow.log_prob(flow.init(jax.random.PRNGKey(0)), x)),
                             atol=1e-4)


def test_rho_is_lowered_until_the_fit_keeps_its_share_of_the_step_ess():
  """``anchor_rho``: the full ρ where its weights keep the ESS floor; else the largest ρ that
  does (the floor met to the bisection's precision, a slightly larger ρ misses it)."""
  from cmtjax.methods.cmt import anchor_rho
  from cmtjax.metrics import reverse_ess
  buf, log_q0 = _buffer(n=4096, seed=3)
  path = PathState(alpha=jnp.asarray(0.6), beta=jnp.asarray(0.7))
  lam, eta = jnp.asarray(2.0), jnp.asarray(0.2)
  rel = normalised_log_weights(buf, lam, eta)
  unit = anchor_shift(buf, path, log_q0, lam, eta, 1.0)

  def ess(rho):
    return float(reverse_ess(rel + rho * unit))

  step_ess = ess(0.0)
  assert ess(1.0) < 0.5 * step_ess  # the full anchor would cost more than half the ESS
  rho = float(anchor_rho(rel, unit, 1.0, 0.5 * step_ess))
  assert 0 < rho < 1
  assert ess(rho) >= 0.5 * step_ess * (1 - 1e-4)
  assert ess(min(rho + 0.01, 1.0)) < 0.5 * step_ess
  assert float(anchor_rho(rel, unit, 1.0, 0.0)) == 1.0
  assert float(anchor_rho(rel, unit, 0.3, ess(0.3))) == pytest.approx(0.3)
