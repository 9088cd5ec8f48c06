"""Importance-weighted forward-KL fitting."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cmtjax.flows import FlowConfig, make_flow
from cmtjax.train import fit_weighted


@pytest.mark.parametrize("mode", ["resample", "weighted"])
def test_fit_recovers_the_weighted_distribution(mode):
  """Buffer from N(0, 2² I), weights ∝ N(m, 1)/N(0, 4): the fitted flow's mean and std
  approach those of N(m, 1)."""
  flow = make_flow(FlowConfig(dim=2, coupling="affine", n_layers=4, hidden=(32,),
                              base_scale=2.0))
  params = flow.init(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(20_000, 2)) * 2.0
  m = np.array([1.0, -0.5])
  log_w = -0.5 * np.sum((x - m) ** 2, 1) + 0.5 * np.sum((x / 2.0) ** 2, 1)
  log_wbar = jnp.asarray(log_w - np.logaddexp.reduce(log_w), jnp.float32)
  opt = optax.adam(3e-3)
  fit = jax.jit(lambda p, s, k: fit_weighted(flow.log_prob, opt, p, s, k, jnp.asarray(x, jnp.float32),
                                             log_wbar, n_steps=600, batch_size=256, mode=mode))
  params, _, info = fit(params, opt.init(params), jax.random.PRNGKey(1))
  assert int(info.n_skipped) == 0
  assert float(info.loss_last) < float(info.loss_first)
  xs, _ = flow.sample_and_log_prob(params, jax.random.PRNGKey(2), 20_000)
  xs = np.asarray(xs)
  np.testing.assert_allclose(xs.mean(0), m, atol=0.1)
  np.testing.assert_allclose(xs.std(0), [1.0, 1.0], atol=0.1)


def test_dropped_entries_are_never_drawn_and_nan_gradients_skip():
  flow = make_flow(FlowConfig(dim=2, coupling="affine", n_layers=2, hidden=(8,)))
  params = flow.init(jax.random.PRNGKey(0))
  x = jnp.array([[0.0, 0.0], [1.0, 1.0], [jnp.nan, 0.0]])
  log_wbar = jnp.log(jnp.array([0.5, 0.5, 0.0]))
  opt = optax.sgd(1e-2)
  new, _, info = fit_weighted(flow.log_prob, opt, params, opt.init(params), jax.random.PRNGKey(1),
                              x, log_wbar, n_steps=20, batch_size=16)
  assert int(info.n_skipped) == 0
  leaves = jax.tree_util.tree_leaves(new)
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in leaves)
  # A buffer whose only entry is NaN: every step is skipped, the parameters stay put.
  new2, _, info2 = fit_weighted(flow.log_prob, opt, params, opt.init(params), jax.random.PRNGKey(1),
                                x[2:], jnp.zeros(1), n_steps=5, batch_size=4)
  assert int(info2.n_skipped) == 5
  for a, b in zip(jax.tree_util.tree_leaves(new2), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unknown_fit_mode():
  with pytest.raises(ValueError, match="unknown fit mode"):
    fit_weighted(None, None, None, None, None, jnp.zeros((2, 2)), jnp.zeros(2), n_steps=1,
                 batch_size=1, mode="bogus")


def test_weighted_mode_draws_only_the_active_rows_of_a_padded_buffer():
  """A buffer of 4 samples padded to 400 rows fits exactly as the 4 samples alone (same
  key): the draws and the weight scale depend on n_active, not on the padding."""
  flow = make_flow(FlowConfig(dim=2, coupling="affine", n_layers=2, hidden=(8,)))
  params = flow.init(jax.random.PRNGKey(0))
  x = jnp.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5], [0.5, -2.0]])
  log_wbar = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
  x_pad = jnp.concatenate([x, jnp.zeros((396, 2))])
  log_wbar_pad = jnp.concatenate([log_wbar, jnp.full((396,), -jnp.inf)])
  opt = optax.adam(1e-2)
  a, _, ia = fit_weighted(flow.log_prob, opt, params, opt.init(params), jax.random.PRNGKey(1),
                          x, log_wbar, n_steps=10, batch_size=8, mode="weighted")
  b, _, ib = fit_weighted(flow.log_prob, opt, params, opt.init(params), jax.random.PRNGKey(1),
                          x_pad, log_wbar_pad, n_steps=10, batch_size=8, mode="weighted",
                          n_active=jnp.array(4))
  assert float(ia.loss_last) == pytest.approx(float(ib.loss_last), rel=1e-6)
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6, atol=1e-7)


def test_iterate_averaging_returns_the_mean_of_the_tail_iterates():
  """``average_tail = T`` returns the mean of the last T of the K iterates (the same iterates
  as a plain fit, step for step: a fit of K−T steps, then T single steps, averaged), the last
  iterate's optimiser state, and the same losses; T outside [0, K] is refused."""
  flow = make_flow(FlowConfig(dim=2, coupling="spline", n_layers=2, hidden=(8,), n_bins=4))
  params = flow.init(jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (256, 2)) * 0.5 + 1.0
  lw = jnp.full((256,), -jnp.log(256.0))
  opt = optax.adam(1e-2)
  key = jax.random.PRNGKey(2)
  k, t = 12, 4
  plain = fit_weighted(flow.log_prob, opt, params, opt.init(params), key, x, lw, n_steps=k,
                       batch_size=64)
  avg = fit_weighted(flow.log_prob, opt, params, opt.init(params), key, x, lw, n_steps=k,
                     batch_size=64, average_tail=t)
  # The iterates, one step at a time with the keys the scan uses.
  keys = jax.random.split(key, k)
  p, s, tail = params, opt.init(params), []
  for i in range(k):
    def loss(q, kk=keys[i]):
      from cmtjax.train.fit import resample_indices
      cdf = jnp.cumsum(jnp.exp(lw))
      return -jnp.mean(flow.log_prob(q, x[resample_indices(kk, cdf, 64)]))
    g = jax.grad(loss)(p)
    u, s = opt.update(g, s, p)
    p = optax.apply_updates(p, u)
    if i >= k - t:
      tail.append(p)
  want = jax.tree_util.tree_map(lambda *a: sum(a) / t, *tail)
  for a, b in zip(jax.tree_util.tree_leaves(avg[0]), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(plain[0]), jax.tree_util.tree_leaves(p)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert float(plain[2].loss_last) == pytest.approx(float(avg[2].loss_last), abs=1e-5)
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree_util.tree_leaves(avg[0]), jax.tree_util.tree_leaves(plain[0])))
  assert moved > 1e-4  # the mean is not the last iterate
  with pytest.raises(ValueError, match="average_tail"):
    fit_weighted(flow.log_prob, opt, params, opt.init(params), key, x, lw, n_steps=k,
                 batch_size=64, average_tail=k + 1)
