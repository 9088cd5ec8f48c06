"""Integrated autocorrelation times against processes whose τ is known."""

import numpy as np
import pytest

from cmtjax.metrics.autocorrelation import (autocorrelation, dihedral_decorrelation,
                                            integrated_autocorrelation_time)


def _ar1(rng, n, phi, n_blocks=1):
  """AR(1) blocks x_t = φ x_{t-1} + noise (stationary start): τ = (1 + φ) / (1 - φ)."""
  x = np.empty((n_blocks, n))
  x[:, 0] = rng.normal(size=n_blocks) / np.sqrt(1 - phi**2)
  noise = rng.normal(size=(n_blocks, n))
  for t in range(1, n):
    x[:, t] = phi * x[:, t - 1] + noise[:, t]
  return x.ravel()


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_ar1_integrated_time(phi):
  rng = np.random.default_rng(1)
  x = _ar1(rng, 5000, phi, n_blocks=8)
  tau = integrated_autocorrelation_time(x, np.repeat(np.arange(8), 5000))
  assert tau == pytest.approx((1 + phi) / (1 - phi), rel=0.1)


def test_independent_blocks_are_not_one_series():
  """Concatenated blocks with different means would look correlated as one series."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4, 2000)) + np.array([[-3.0], [0.0], [3.0], [6.0]])
  blocks = np.repeat(np.arange(4), 2000)
  assert integrated_autocorrelation_time(x.ravel(), blocks) == pytest.approx(1.0, abs=0.2)
  assert integrated_autocorrelation_time(x.ravel()) > 10.0


def test_dihedral_decorrelation_uses_the_slowest_component():
  rng = np.random.default_rng(3)
  fast = rng.uniform(-np.pi, np.pi, size=8000)
  slow = np.angle(np.exp(0.3j * _ar1(rng, 8000, 0.9)))  # wrapped: periodic; tau ~ 19
  out = dihedral_decorrelation(np.stack([fast, slow], axis=1), names=["phi", "psi"],
                               frame_ps=0.2)
  assert out["slowest"] == "psi" and out["tau_frames"]["phi"] < 1.3
  assert 12.0 < out["tau_max_frames"] < 26.0
  assert out["effective_samples"] == pytest.approx(8000 / out["tau_max_frames"])
  assert out["tau_max_ps"] == pytest.approx(0.2 * out["tau_max_frames"])
  rho = autocorrelation(np.ones(10))  # a constant series: no correlation to measure
  assert rho[0] == 1.0 and not rho[1:].any()
