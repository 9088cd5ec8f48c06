"""Energy regularisation: identity below the threshold, log above, cap, non-finite counted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.targets.molecules import regularise_energy


def test_regularise_energy_values_and_counts():
  e = jnp.array([-50.0, 10.0, 1e3, 1e3 + 1.0, 1e3 + np.e - 1.0, 1e30, jnp.nan, jnp.inf, -jnp.inf])
  e_reg, info = regularise_energy(e, log_threshold=1e3, cap=1e3 + 20.0)
  expected = [-50.0, 10.0, 1e3, 1e3 + np.log(2.0), 1e3 + 1.0, 1e3 + 20.0, 1e3 + 20.0,
              1e3 + 20.0, 1e3 + 20.0]
  np.testing.assert_allclose(np.asarray(e_reg), expected, rtol=1e-6)
  assert int(info.n_nonfinite) == 3
  assert int(info.n_regularised) == 6
  assert bool(jnp.all(jnp.isfinite(e_reg)))


def test_regularise_energy_gradient():
  def total(e):
    return jnp.sum(regularise_energy(e, log_threshold=1e3, cap=1e3 + 20.0)[0])

  e = jnp.array([10.0, 1e3 + 3.0, 1e30, jnp.nan, jnp.inf])
  g = np.asarray(jax.grad(total)(e))
  np.testing.assert_allclose(g, [1.0, 1.0 / 4.0, 0.0, 0.0, 0.0], rtol=1e-6)


def test_regularise_energy_is_monotone():
  e = jnp.linspace(-10.0, 1e4, 2001)
  e_reg, _ = regularise_energy(e, log_threshold=100.0, cap=1e4)
  assert bool(jnp.all(jnp.diff(e_reg) > 0))


def test_cap_below_threshold_is_rejected():
  with pytest.raises(ValueError):
    regularise_energy(jnp.zeros(2), log_threshold=10.0, cap=1.0)
