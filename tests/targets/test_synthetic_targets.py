"""Synthetic targets: normalisation, exact samples, modes, and the registry."""

from __future__ import annotations

import math
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from cmtjax.targets import (
    MOLECULAR_TARGET_NAMES,
    TARGET_NAMES,
    Target,
    double_well,
    gmm,
    make_target,
    many_well,
)
from cmtjax.targets.double_well import _envelope, energy_1d

KEY = jax.random.PRNGKey(42)


def _energy_np(x):
  return x**4 - 6.0 * x**2 - 0.5 * x


# ----------------------------------------------------------------------------- GMM


def test_gmm40_means_follow_the_documented_draw():
  t = make_target("gmm40")
  expected = jax.random.uniform(jax.random.PRNGKey(0), (40, 2), minval=-40.0, maxval=40.0)
  np.testing.assert_array_equal(np.asarray(t.mode_centres), np.asarray(expected))
  assert t.name == "gmm40" and t.dim == 2 and t.log_Z == 0.0 and t.n_modes == 40
  assert t.plot_bounds == (-50.0, 50.0)
  np.testing.assert_allclose(np.asarray(t.mode_weights), np.full(40, 1 / 40), rtol=1e-6)
  t50 = make_target("gmm40_50d")
  assert t50.dim == 50 and t50.mode_centres.shape == (40, 50)
  assert float(jnp.max(jnp.abs(t50.mode_centres))) <= 40.0


def test_gmm40_normalised_by_quadrature():
  t = make_target("gmm40")
  h = 0.25
  g = np.arange(-52.0, 52.0 + h / 2, h)
  xx, yy = np.meshgrid(g, g, indexing="ij")
  pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
  lp = np.concatenate([np.asarray(t.log_prob(c)) for c in jnp.array_split(pts, 8)])
  z = np.sum(np.exp(lp.astype(np.float64))) * h * h
  assert abs(z - 1.0) < 1e-4, z


@pytest.mark.parametrize("name,kwargs", [("gmm16", dict(dim=5)), ("gmm40_50d", {})])
def test_gmm_log_prob_matches_float64_reference(name, kwargs):
  t = make_target(name, **kwargs)
  means = np.asarray(t.mode_centres, np.float64)
  x = np.asarray(t.sample(KEY, 64), np.float64)
  x[:8] += 3.0  # also points between modes
  comp = np.stack([stats.multivariate_normal(m, np.eye(t.dim)).logpdf(x) for m in means], -1)
  ref = np.logaddexp.reduce(comp, axis=-1) - math.log(len(means))
  np.testing.assert_allclose(np.asarray(t.log_prob(jnp.asarray(x, jnp.float32))), ref,
                             atol=2e-4 * t.dim, rtol=1e-5)


def test_gmm_far_from_modes_is_finite_and_has_the_right_gradient():
  t = make_target("gmm40", scale=1.0)
  x = jnp.array([[1000.0, -800.0]])
  lp = t.log_prob(x)
  g = jax.grad(lambda z: jnp.sum(t.log_prob(z)))(x)
  assert np.all(np.isfinite(np.asarray(lp))) and np.all(np.isfinite(np.asarray(g)))
  nearest = t.mode_centres[t.assign_modes(x)[0]]
  np.testing.assert_allclose(np.asarray(g[0]), -np.asarray(x[0] - nearest), rtol=1e-4)


def test_gmm_exact_samples_have_uniform_modes_and_unit_spread():
  t = make_target("gmm16", dim=10)  # well separated: nearest centre is the true component
  n = 20_000
  x = t.sample(KEY, n)
  assert x.shape == (n, 10)
  idx = t.assign_modes(x)
  occ = np.bincount(np.asarray(idx), minlength=16) / n
  assert 0.5 * np.abs(occ - 1 / 16).sum() < 0.02
  resid = np.asarray(x - t.mode_centres[idx])
  np.testing.assert_allclose(resid.mean(0), 0.0, atol=0.03)
  np.testing.assert_allclose(resid.var(0), 1.0, atol=0.05)
  # Samples score like the mixture: E_p[log p] = -entropy of a 10-d unit Gaussian - log 16.
  ent = 0.5 * 10 * (1 + math.log(2 * math.pi))
  assert abs(float(jnp.mean(t.log_prob(x))) - (-ent - math.log(16))) < 0.05


def test_gmm_scale_and_name():
  t = gmm(n_modes=3, dim=2, box=5.0, scale=0.5, seed=3)
  assert t.name == "gmm3_2d" and t.plot_bounds == (-6.25, 6.25)
  x = t.sample(KEY, 20_000)
  resid = np.asarray(x - t.mode_centres[t.assign_modes(x)])
  assert abs(resid.std() - 0.5) < 0.02
  with pytest.raises(ValueError):
    gmm(scale=0.0)


# ----------------------------------------------------------------------- double / many well


def test_double_well_log_z_against_2d_quadrature():
  t = double_well()
  h = 2e-3
  x1 = np.arange(-5.0, 5.0, h)
  x2 = np.arange(-9.0, 9.0, 0.01)
  # The 2-D integral of exp(-E(x1) - x2²/2) on a plain grid, in float64.
  z2d = (np.exp(-_energy_np(x1)).sum() * h) * (np.exp(-0.5 * x2**2).sum() * 0.01)
  assert abs(t.log_Z - math.log(z2d)) < 1e-8
  # And log p̃ of the target is the same function.
  pts = jnp.array([[-1.7, 0.3], [0.0, -1.0], [1.75, 2.0]])
  ref = -_energy_np(np.asarray(pts[:, 0], np.float64)) - 0.5 * np.asarray(pts[:, 1]) ** 2
  np.testing.assert_allclose(np.asarray(t.log_prob(pts)), ref, rtol=1e-6)


def test_many_well_log_z_and_layout():
  t32 = make_target("many_well32")
  assert t32.dim == 32 and t32.mode_centres is None and t32.info["n_copies"] == 16
  assert abs(t32.log_Z - 16 * double_well().log_Z) < 1e-9
  assert abs(t32.log_Z - 164.69567531) < 1e-6  # known value of this benchmark
  t = many_well(dim=6)
  x = jax.random.normal(KEY, (7, 6)) * 2.0
  per_copy = sum(double_well().log_prob(x[:, 2 * i:2 * i + 2]) for i in range(3))
  np.testing.assert_allclose(np.asarray(t.log_prob(x)), np.asarray(per_copy), rtol=1e-5)
  with pytest.raises(ValueError):
    many_well(dim=5)


def test_double_well_modes_and_exact_sample_statistics():
  t = double_well()
  h = 1e-4
  g = np.arange(-5.0, 5.0, h)
  p = np.exp(-_energy_np(g))
  p /= p.sum()
  barrier = t.info["well_boundary"]
  p_right, m2 = p[g > barrier].sum(), (p * g**2).sum()
  np.testing.assert_allclose(np.asarray(t.mode_weights), [1 - p_right, p_right], atol=1e-6)
  np.testing.assert_allclose(np.asarray(t.mode_centres[:, 0]), [-1.7108, 1.7525], atol=1e-4)
  n = 200_000
  x = t.sample(KEY, n)
  right = np.asarray(t.assign_modes(x)).mean()
  assert abs(right - p_right) < 5 * math.sqrt(p_right * (1 - p_right) / n)
  x1 = np.asarray(x[:, 0], np.float64)
  assert abs((x1**2).mean() - m2) < 5 * (x1**2).std() / math.sqrt(n)
  assert abs(x1.mean() - (p * g).sum()) < 5 * x1.std() / math.sqrt(n)
  x2 = np.asarray(x[:, 1], np.float64)
  assert abs(x2.mean()) < 0.01 and abs(x2.var() - 1.0) < 0.015
  # Kolmogorov-Smirnov distance of x1 against the quadrature CDF.
  cdf = np.cumsum(p)
  ks = np.max(np.abs(np.searchsorted(np.sort(x1), g) / n - cdf))
  assert ks < 1.63 / math.sqrt(n)  # the 1 % critical value


def test_many_well_samples_occupy_each_well_correctly():
  t = make_target("many_well32")
  n = 20_000
  x = t.sample(KEY, n)
  assert x.shape == (n, 32) and np.all(np.isfinite(np.asarray(x)))
  frac = np.asarray(x[:, 0::2] > t.info["well_boundary"]).mean(0)
  p = t.info["right_well_prob"]
  assert np.all(np.abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n))
  assert abs(frac.mean() - p) < 4 * math.sqrt(p * (1 - p) / (16 * n))
  assert abs(float(jnp.var(x[:, 1::2])) - 1.0) < 0.02


def test_rejection_envelope_dominates_the_density():
  lo, h, _, log_m = _envelope()
  n_cells = log_m.shape[0]
  # 64 points per cell (endpoints included) on a band through both wells and the tails.
  sub = np.linspace(0.0, 1.0, 64)
  cells = np.arange(n_cells)
  x = lo + h * (cells[:, None] + sub[None, :])
  gap = -_energy_np(x) - np.asarray(log_m, np.float64)[:, None]
  assert gap.max() <= 0.0
  # The envelope is tight where the mass is: acceptance above 99 % near the minima.
  near = np.abs(np.abs(x[:, 0]) - 1.73) < 0.3
  assert np.exp(gap[near]).mean() > 0.99
  assert float(energy_1d(jnp.float32(2.0))) == pytest.approx(16 - 24 - 1)


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_kwargs():
  assert set(TARGET_NAMES) >= {"gmm40", "gmm40_50d", "gmm16", "many_well32", "double_well2d",
                               "aldp", "ala4", "ala6", "elil"}
  assert isinstance(make_target("double_well2d"), Target)
  t = make_target("gmm16")
  assert t.dim == 10 and t.n_modes == 16 and t.plot_bounds == (-25.0, 25.0)
  assert make_target("gmm16", dim=3).dim == 3
  a = make_target("gmm40", seed=1)
  assert not np.allclose(np.asarray(a.mode_centres), np.asarray(make_target("gmm40").mode_centres))
  with pytest.raises(ValueError, match="unknown target 'foo'; known targets: gmm40"):
    make_target("foo")
  with pytest.raises(ValueError, match="'dim'"):
    make_target("gmm40", dim=3)
  with pytest.raises(ValueError, match="'bogus'"):
    make_target("many_well32", bogus=1)


def test_registry_molecular_hook(monkeypatch):
  calls = []
  fake = types.ModuleType("cmtjax.targets.molecules")

  def make_molecular_target(name, **kwargs):
    calls.append((name, kwargs))
    return Target(name=name, dim=3, log_prob=lambda x: -jnp.sum(x**2, -1))

  fake.make_molecular_target = make_molecular_target
  monkeypatch.setitem(sys.modules, "cmtjax.targets.molecules", fake)
  assert make_target("aldp", temperature=300.0).name == "aldp"
  assert calls == [("aldp", {"temperature": 300.0})]

  monkeypatch.setitem(sys.modules, "cmtjax.targets.molecules", None)  # import fails
  for name in MOLECULAR_TARGET_NAMES:
    with pytest.raises(ImportError, match="molecules"):
      make_target(name)
  monkeypatch.setitem(sys.modules, "cmtjax.targets.molecules",
                      types.ModuleType("cmtjax.targets.molecules"))  # no factory
  with pytest.raises(ImportError, match="make_molecular_target"):
    make_target("elil")
