"""Molecular dynamics with the JAX energy: energy conservation and thermostat."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cmtjax.targets.molecules.md import langevin_md
from molecular_reference import molecular_system


def test_frictionless_dynamics_conserves_energy():
  system = molecular_system("aldp")
  traj = langevin_md(system, jax.random.key(0), n_steps=400, save_every=20, n_chains=2,
                     dt=0.0005, friction=0.0)
  total = np.asarray(traj.potential_energy + traj.kinetic_energy, np.float64)
  assert traj.positions.shape == (20, 2, 22, 3)
  assert np.all(np.isfinite(total))
  # Velocity Verlet at 0.5 fs: fluctuations of the total energy far below k_B T (2.5 kJ/mol),
  # while kinetic and potential energy each swing by tens of kJ/mol.
  assert np.max(np.abs(total - total[:1])) < 0.5
  assert np.ptp(np.asarray(traj.kinetic_energy)) > 5.0


@pytest.mark.slow
def test_langevin_thermostat_reaches_the_bath_temperature():
  system = molecular_system("aldp")
  traj = langevin_md(system, jax.random.key(1), n_steps=6000, save_every=100, n_chains=8,
                     temperature=400.0, friction=5.0)
  temp = np.asarray(traj.temperature_mid)[20:]
  # 8 chains x 40 frames; the per-frame temperature of 66 degrees of freedom fluctuates by
  # ~17 %, frames 0.1 ps apart are nearly independent at friction 5/ps.
  assert abs(temp.mean() - 400.0) < 15.0
  # Full-step BAOAB momenta run slightly cold, never hot.
  assert np.asarray(traj.temperature)[20:].mean() < temp.mean() + 5.0
