"""ESS, log Z estimates and evidence bounds against closed forms."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.metrics import (
    count_nonfinite,
    elbo,
    eubo,
    forward_ess,
    forward_ess_without_top,
    log_z_forward,
    log_z_reverse,
    normalised_weights,
    reverse_ess,
    reverse_ess_clipped,
    top_log_weight_excess,
)

MU = 0.5
LOG_C = math.log(3.0)
N = 200_000


def _gaussian_pair_log_w(x):
  """log w = log p̃ - log q with p̃ = 3·N(0, 1), q = N(MU, 1)."""
  return LOG_C - 0.5 * x**2 + 0.5 * (x - MU) ** 2


@pytest.fixture(scope="module")
def gaussian_pair():
  k_q, k_p = jax.random.split(jax.random.PRNGKey(7))
  x_q = MU + jax.random.normal(k_q, (N,))
  x_p = jax.random.normal(k_p, (N,))
  return _gaussian_pair_log_w(x_q), _gaussian_pair_log_w(x_p)


def test_reverse_ess_equal_and_dominant_weights():
  assert float(reverse_ess(jnp.full((1000,), 150.0))) == pytest.approx(1.0, abs=1e-6)
  one = jnp.zeros(1000).at[3].set(200.0)
  assert float(reverse_ess(one)) == pytest.approx(1e-3, rel=1e-5)
  # Two equal weights out of four (two negligible): ESS = 2²/(4·2) = 0.5.
  assert float(reverse_ess(jnp.array([0.0, 0.0, -1e4, -1e4]))) == pytest.approx(0.5)
  # A log weight of -inf is non-finite: dropped (and counted), not a zero weight in N.
  assert float(reverse_ess(jnp.array([0.0, 0.0, -jnp.inf, -jnp.inf]))) == pytest.approx(1.0)


def test_nonfinite_log_weights_are_dropped_and_counted():
  lw = jnp.array([1.0, 1.0, jnp.nan, jnp.inf, -jnp.inf])
  assert int(count_nonfinite(lw)) == 3
  assert float(reverse_ess(lw)) == pytest.approx(1.0)
  assert float(log_z_reverse(lw)) == pytest.approx(1.0)
  assert float(elbo(lw)) == pytest.approx(1.0)
  assert float(forward_ess(lw)) == pytest.approx(1.0)
  np.testing.assert_allclose(np.asarray(normalised_weights(lw)), [0.5, 0.5, 0, 0, 0])
  none = jnp.array([jnp.nan, jnp.inf])
  assert float(reverse_ess(none)) == 0.0 and float(forward_ess(none)) == 0.0
  assert math.isnan(float(log_z_reverse(none))) and math.isnan(float(eubo(none)))
  assert float(jnp.sum(normalised_weights(none))) == 0.0


def test_reverse_and_forward_ess_match_the_gaussian_closed_form(gaussian_pair):
  lw_q, lw_p = gaussian_pair
  # For p = N(0,1), q = N(mu,1): 1 / E_q[(p/q)²] = exp(-mu²) = 0.7788. The estimators'
  # standard deviations at N = 2e5 are about 0.002 (delta method), so 0.01 is 5 sigma.
  assert float(reverse_ess(lw_q)) == pytest.approx(math.exp(-MU**2), abs=0.01)
  assert float(forward_ess(lw_p)) == pytest.approx(math.exp(-MU**2), abs=0.01)
  # Both are invariant to the scale of p̃.
  assert float(reverse_ess(lw_q + 40.0)) == pytest.approx(float(reverse_ess(lw_q)), rel=1e-4)
  assert float(forward_ess(lw_p - 40.0)) == pytest.approx(float(forward_ess(lw_p)), rel=1e-4)


def test_log_z_and_bounds_match_the_gaussian_closed_form(gaussian_pair):
  lw_q, lw_p = gaussian_pair
  # log Z = log 3; KL(q‖p) = KL(p‖q) = mu²/2; sd of the means ≈ mu / sqrt(N) ≈ 1.1e-3.
  assert float(log_z_reverse(lw_q)) == pytest.approx(LOG_C, abs=0.01)
  assert float(log_z_forward(lw_p)) == pytest.approx(LOG_C, abs=0.01)
  assert float(elbo(lw_q)) == pytest.approx(LOG_C - MU**2 / 2, abs=0.006)
  assert float(eubo(lw_p)) == pytest.approx(LOG_C + MU**2 / 2, abs=0.006)
  assert float(elbo(lw_q)) < float(log_z_reverse(lw_q)) < float(eubo(lw_p))


def test_reverse_ess_clipped():
  lw = jnp.zeros(10_000).at[17].set(10.0)
  assert float(reverse_ess(lw)) < 0.01
  # k = floor(1e4 · 1e-4) = 1: the largest is lowered to the next one, all weights equal.
  assert float(reverse_ess_clipped(lw, 1e-4)) == pytest.approx(1.0)
  # With N · fraction < 1 nothing is clipped.
  lw9999 = lw[:9_999]
  assert float(reverse_ess_clipped(lw9999, 1e-4)) == pytest.approx(float(reverse_ess(lw9999)))
  # k = 2 on 20000 entries: two outliers are clipped to the third largest (here 1.0).
  lw2 = jnp.zeros(20_000).at[0].set(30.0).at[1].set(20.0).at[2].set(1.0)
  w = np.ones(20_000)
  w[:3] = math.e
  expected = w.sum() ** 2 / (20_000 * (w**2).sum())
  assert float(reverse_ess_clipped(lw2, 1e-4)) == pytest.approx(expected, rel=1e-5)
  # Non-finite entries do not count towards N.
  lw_nan = jnp.concatenate([lw, jnp.full((5,), jnp.nan)])
  assert float(reverse_ess_clipped(lw_nan, 1e-4)) == pytest.approx(1.0)


def test_metrics_compose_under_jit_and_vmap():
  lw = jax.random.normal(jax.random.PRNGKey(0), (4, 256))
  fns = (reverse_ess, forward_ess, log_z_reverse, log_z_forward, elbo, eubo,
         lambda x: reverse_ess_clipped(x, 0.01))
  batched = jax.jit(lambda x: jnp.stack([jax.vmap(f)(x) for f in fns]))(lw)
  for i, f in enumerate(fns):
    for r in range(4):
      assert float(batched[i, r]) == pytest.approx(float(f(lw[r])), rel=1e-5)


def test_clipping_lowers_the_top_fraction_to_the_next_weight():
  """One rounding rule: k = floor(n · fraction) of the n finite weights are clipped."""
  from cmtjax.metrics.weights import clip_largest_log_weights
  log_w = jnp.array([0.0, 5.0, 1.0, 9.0, -jnp.inf, 2.0, 7.0, 3.0, 4.0, 6.0, jnp.nan])
  clipped, n = clip_largest_log_weights(log_w, 0.25)  # 9 finite: floor(2.25) = 2 → the 3rd
  np.testing.assert_array_equal(clipped, [0, 5, 1, 6, -np.inf, 2, 6, 3, 4, 6, -np.inf])
  assert int(n) == 2
  clipped, n = clip_largest_log_weights(log_w, 0.1)  # floor(0.9) = 0: nothing is clipped
  assert float(clipped.max()) == 9.0 and int(n) == 0
  clipped, n = clip_largest_log_weights(jnp.arange(10000.0), 1e-4)  # 1e4 · 1e-4 is exactly 1
  assert int(n) == 1 and float(clipped.max()) == 9998.0
  # The clipped reverse ESS is the plain ESS of the same clipped weights.
  from cmtjax.metrics import reverse_ess, reverse_ess_clipped
  np.testing.assert_allclose(float(reverse_ess_clipped(log_w, 0.25)),
                             float(reverse_ess(clip_largest_log_weights(log_w, 0.25)[0])))


def test_one_uncovered_reference_sample_is_told_apart_from_a_broad_miss():
  """A single reference sample the model misses by 30 nats takes the forward ESS to ~0;
  leaving out the top sample gives the rest's ESS back, and the top excess names the gap.
  A model that misses broadly stays low without its top sample."""
  rng = np.random.default_rng(0)
  lw = rng.normal(0.0, 0.1, 1001)
  lw[17] = 30.0
  lw_j = jnp.asarray(lw)
  assert float(forward_ess(lw_j)) < 1e-9
  assert float(forward_ess_without_top(lw_j)) == pytest.approx(
      float(forward_ess(jnp.asarray(np.delete(lw, 17)))), rel=1e-5)
  assert float(forward_ess_without_top(lw_j)) > 0.95
  assert float(top_log_weight_excess(lw_j)) == pytest.approx(30.0 - np.median(lw), abs=1e-4)
  broad = jnp.asarray(rng.normal(0.0, 3.0, 1000))
  assert float(forward_ess_without_top(broad)) < 0.05
  # Non-finite entries are left out of both; none finite gives 0.
  with_nan = jnp.asarray(np.concatenate([lw, [np.nan, -np.inf]]))
  assert float(forward_ess_without_top(with_nan)) == pytest.approx(
      float(forward_ess_without_top(lw_j)), rel=1e-6)
  none = jnp.array([jnp.nan, jnp.inf])
  assert float(forward_ess_without_top(none)) == 0.0
  assert float(top_log_weight_excess(none)) == 0.0
