"""Mode metrics on hand-made occupancies, and evaluate() end to end on exact and collapsed models."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.metrics import (
    evaluate,
    mode_occupancy,
    mode_tv,
    modes_covered,
    right_well_fraction,
    well_occupancy_tv,
)
from cmtjax.targets import make_target


def test_mode_occupancy_counts_and_weights():
  idx = jnp.array([0, 1, 1, 3, -1, 7])  # -1 and 7 fall outside [0, 4) and are ignored
  np.testing.assert_allclose(np.asarray(mode_occupancy(idx, 4)), [0.25, 0.5, 0.0, 0.25])
  w = jnp.array([1.0, 0.0, 1.0, 2.0, 5.0, 5.0])
  np.testing.assert_allclose(np.asarray(mode_occupancy(idx, 4, w)), [0.25, 0.25, 0.0, 0.5])
  assert float(jnp.sum(mode_occupancy(jnp.array([-1]), 3))) == 0.0


def test_modes_covered_and_tv():
  true = jnp.array([0.4, 0.4, 0.1, 0.1])
  occ = jnp.array([0.7, 0.2, 0.1, 0.0])
  # Thresholds 0.25 · true = [0.1, 0.1, 0.025, 0.025]: modes 0, 1, 2 count.
  assert int(modes_covered(occ, true)) == 3
  assert int(modes_covered(occ, true, threshold=0.6)) == 2  # 0.2 < 0.24
  assert float(mode_tv(occ, true)) == pytest.approx(0.5 * (0.3 + 0.2 + 0.0 + 0.1))
  assert float(mode_tv(true, true)) == 0.0
  assert float(mode_tv(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))) == 1.0


def test_well_occupancy_tv():
  # Two copies; x1 coordinates are columns 0 and 2, boundary 0.
  x = jnp.array([[1.0, 9.0, -1.0, 9.0],
                 [1.0, 9.0, 1.0, 9.0],
                 [-1.0, 9.0, 1.0, 9.0],
                 [1.0, 9.0, 1.0, 9.0]])
  np.testing.assert_allclose(np.asarray(right_well_fraction(x, 0.0)), [0.75, 0.75])
  assert float(well_occupancy_tv(x, 0.0, 0.5)) == pytest.approx(0.25)
  w = jnp.array([0.0, 0.0, 1.0, 0.0])  # only the third sample: copy 0 left, copy 1 right
  np.testing.assert_allclose(np.asarray(right_well_fraction(x, 0.0, w)), [0.0, 1.0])
  assert float(well_occupancy_tv(x, 0.0, 0.8, w)) == pytest.approx(0.5 * (0.8 + 0.2))


EXPECTED_KEYS = {
    "reverse_ess", "reverse_ess_clipped", "reverse_ess_repeats", "log_z", "log_z_se",
    "log_z_error",
    "elbo", "n_nonfinite", "n_samples", "eubo", "forward_ess", "log_z_forward", "nll",
    "forward_ess_without_top", "forward_top_log_w_excess",
    "n_nonfinite_ref", "modes_covered", "n_modes", "mode_tv", "mode_tv_reweighted",
}


def test_evaluate_exact_model_on_gmm():
  t = make_target("gmm40")
  exact = lambda k, n: (lambda x: (x, t.log_prob(x)))(t.sample(k, n))
  r = evaluate(t, exact, jax.random.PRNGKey(0), 3000, log_prob_fn=t.log_prob,
               n_repeats=3, chunk=1024)
  assert set(r) == EXPECTED_KEYS
  assert r["n_samples"] == 9000 and len(r["reverse_ess_repeats"]) == 3
  assert r["reverse_ess"] == pytest.approx(1.0, abs=1e-5)
  assert r["forward_ess"] == pytest.approx(1.0, abs=1e-5)
  for k in ("log_z", "log_z_error", "elbo", "eubo", "log_z_forward", "log_z_se"):
    assert r[k] == pytest.approx(0.0, abs=1e-4), k
  assert r["modes_covered"] == 40 and r["n_modes"] == 40 and r["n_nonfinite"] == 0
  # Multinomial noise of 9000 draws over 40 modes: E[TV] ≈ 0.03.
  assert r["mode_tv"] < 0.06 and r["mode_tv_reweighted"] == pytest.approx(r["mode_tv"], abs=1e-5)
  assert all(isinstance(r[k], float) for k in EXPECTED_KEYS - {
      "reverse_ess_repeats", "n_nonfinite", "n_samples", "modes_covered", "n_modes",
      "n_nonfinite_ref"})


def test_evaluate_collapsed_model_on_gmm():
  """q = N(m, I), the most isolated of the 40 components: the reverse view looks perfect."""
  t = make_target("gmm40")
  c = np.asarray(t.mode_centres)
  d = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(40) * 1e9
  m0 = t.mode_centres[int(np.argmax(d.min(1)))]

  def log_q(x):
    return -0.5 * jnp.sum((x - m0) ** 2, -1) - math.log(2 * math.pi)

  def sample_and_log_prob(k, n):
    x = m0 + jax.random.normal(k, (n, 2))
    return x, log_q(x)

  r = evaluate(t, sample_and_log_prob, jax.random.PRNGKey(1), 2000, log_prob_fn=log_q,
               n_repeats=2)
  # log w = log(1/40) on that mode (no other component within several std of it).
  assert r["log_z_error"] == pytest.approx(-math.log(40), abs=0.01)
  assert r["reverse_ess"] > 0.99
  assert r["modes_covered"] == 1
  assert r["mode_tv"] == pytest.approx(1 - 1 / 40, abs=1e-3)
  assert r["mode_tv_reweighted"] == pytest.approx(1 - 1 / 40, abs=1e-3)
  assert r["forward_ess"] < 0.05 and r["eubo"] > 10.0


def test_evaluate_many_well_with_nonfinite_samples():
  t = make_target("many_well32")

  def sample_and_log_prob(k, n):
    x = t.sample(k, n)
    log_q = t.log_prob(x) - t.log_Z
    return x, log_q.at[:2].set(jnp.nan)  # two broken samples per chunk

  r = evaluate(t, sample_and_log_prob, jax.random.PRNGKey(2), 2000, n_repeats=2, chunk=1000)
  assert "eubo" not in r and "modes_covered" not in r  # no log_prob_fn; modes unknown
  assert r["n_nonfinite"] == 8 and r["n_samples"] == 4000
  assert r["reverse_ess"] == pytest.approx(1.0, abs=1e-4)
  assert r["log_z_error"] == pytest.approx(0.0, abs=1e-3)
  p = t.info["right_well_prob"]
  # Per-copy binomial noise on 4000 samples: E|p̂ - p| ≈ 0.8 · sqrt(p(1-p)/4000) ≈ 0.0046.
  assert r["well_occupancy_tv"] < 0.015
  assert r["well_occupancy_tv_reweighted"] == pytest.approx(r["well_occupancy_tv"], abs=1e-4)
  assert abs(p - 0.8443106) < 1e-6


def test_evaluate_rejects_bad_sizes():
  t = make_target("double_well2d")
  with pytest.raises(ValueError):
    evaluate(t, lambda k, n: None, jax.random.PRNGKey(0), 0)


def test_evaluate_nll_is_nan_when_no_reference_sample_has_a_finite_density():
  t = make_target("double_well2d")

  def sample_and_log_prob(k, n):
    x = jax.random.normal(k, (n, 2))
    return x, jnp.sum(jax.scipy.stats.norm.logpdf(x), axis=-1)

  r = evaluate(t, sample_and_log_prob, jax.random.PRNGKey(0), 1000, n_repeats=1,
               log_prob_fn=lambda x: jnp.full(x.shape[:1], -jnp.inf))
  assert math.isnan(r["nll"])  # not 0, which would read as a perfect fit
  r = evaluate(t, sample_and_log_prob, jax.random.PRNGKey(0), 1000, n_repeats=1,
               log_prob_fn=lambda x: jnp.sum(jax.scipy.stats.norm.logpdf(x), axis=-1))
  assert math.isfinite(r["nll"]) and r["nll"] > 0
