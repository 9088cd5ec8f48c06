"""Langevin dynamics: the BAOAB step (``cmtjax.sampling.langevin``) and ``langevin_md``.

Physics checks: exact equipartition of a harmonic batch at one temperature per slot, velocity
Verlet against jax-md's integrator, energy conservation and the thermostat on alanine
dipeptide.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax_md import simulate, space
import numpy as np
import pytest

from cmtjax.sampling.langevin import make_langevin
from cmtjax.targets.molecules.md import langevin_md
from molecular_reference import molecular_system


def test_baoab_samples_a_harmonic_batch_at_each_slots_temperature():
  """E = |x|^2 / 2 per configuration, two masses, three temperatures (one per slot). BAOAB's
  known stationary moments: positions exactly N(0, kT) at any dt; the momenta after the
  friction/noise step (p - dt/2 F) exactly N(0, m kT); the full-step momenta cold by the factor
  1 - (dt omega)^2 / 4, omega^2 = 1 / m."""
  masses = np.array([1.0, 4.0])
  kt = np.array([0.5, 1.0, 2.0])
  dt, n_chains = 0.5, 4000

  def energy_and_forces(r):
    return 0.5 * jnp.sum(r**2, axis=(-2, -1)), -r

  lv = make_langevin(energy_and_forces, masses, jnp.asarray(kt)[:, None], dt=dt, friction=1.0)

  @jax.jit
  def run(key):
    state = lv.init(key, jnp.zeros((kt.size, n_chains, masses.size, 3)))

    def block(s, k):
      s = jax.lax.fori_loop(0, 10, lambda i, s: lv.step(jax.random.fold_in(k, i), s), s)
      return s, (s.positions, s.momenta, s.momenta - 0.5 * dt * s.forces)

    return jax.lax.scan(block, state, jax.random.split(jax.random.fold_in(key, 1), 40))[1]

  x, p, p_mid = (np.asarray(a, np.float64)[10:] for a in run(jax.random.key(0)))
  kt_b = kt[None, :, None, None, None]
  m = masses[None, None, None, :, None]
  axes = (0, 2, 4)  # frames, chains, xyz -> [slot, atom]
  # ~1e5 correlated draws per entry: standard error ~0.5 %.
  np.testing.assert_allclose(np.mean(x**2 / kt_b, axis=axes), 1.0, atol=0.02)
  np.testing.assert_allclose(np.mean(p_mid**2 / (m * kt_b), axis=axes), 1.0, atol=0.02)
  cold = np.broadcast_to(1.0 - dt**2 / (4.0 * masses), (kt.size, masses.size))
  np.testing.assert_allclose(np.mean(p**2 / (m * kt_b), axis=axes), cold, atol=0.02)
  assert np.mean(p[..., 0, :]**2 / kt_b[..., 0, :]) < 0.96  # the full-step bias is seen


def test_frictionless_step_is_velocity_verlet_as_in_jax_md():
  """At zero friction the step is velocity Verlet; jax-md's ``nvt_langevin`` (gamma = 0) is the
  oracle, from the same positions and momenta."""
  system = molecular_system("aldp")
  kt, dt, n_steps = 2.494, 0.0005, 200
  r0 = jnp.broadcast_to(jnp.asarray(system.positions, jnp.float32), (2, system.n_atoms, 3))
  mass = jnp.asarray(system.masses, jnp.float32)[:, None]
  p0 = jnp.sqrt(mass * kt) * jax.random.normal(jax.random.key(3), r0.shape)
  batch_energy = system.energy_fns.batch_energy
  init_fn, step_fn = simulate.nvt_langevin(lambda r: jnp.sum(batch_energy(r)),
                                           space.free()[1], dt=dt, kT=kt, gamma=0.0)
  lv = make_langevin(system.energy_fns.batch_energy_and_forces, system.masses, kt, dt=dt,
                     friction=0.0)

  @jax.jit
  def oracle():
    s = init_fn(jax.random.key(0), r0, mass=mass, momenta=p0)
    s = jax.lax.fori_loop(0, n_steps, lambda i, s: step_fn(s), s)
    return s.position, s.momentum

  @jax.jit
  def ours():
    s = lv.init(jax.random.key(0), r0)._replace(momenta=p0)
    s = jax.lax.fori_loop(0, n_steps, lambda i, s: lv.step(jax.random.key(i), s), s)
    return s.positions, s.momenta

  (r_ref, p_ref), (r, p) = oracle(), ours()
  assert np.max(np.abs(np.asarray(r_ref - r0))) > 0.05  # the atoms moved
  np.testing.assert_allclose(np.asarray(r), np.asarray(r_ref), atol=1e-5)
  np.testing.assert_allclose(np.asarray(p), np.asarray(p_ref), atol=1e-2)


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
  # The saved energies are those of the saved positions.
  np.testing.assert_allclose(
    np.asarray(system.energy_fns.batch_energy(traj.positions.reshape(-1, 22, 3))),
    np.asarray(traj.potential_energy).reshape(-1), atol=1e-3, rtol=1e-5)


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
