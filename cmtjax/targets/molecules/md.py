"""Langevin molecular dynamics with the JAX force field.

``langevin_md`` runs ``n_chains`` independent trajectories at once: the chain axis is the batch
axis of the energy, so one force evaluation serves all chains. The integrator is the BAOAB step
of ``cmtjax.sampling.langevin`` (half kick, half drift, Ornstein-Uhlenbeck friction/noise, half
drift, force, half kick), the splitting of OpenMM's ``LangevinMiddleIntegrator``; the
replica-exchange sampler runs the same step. Units: nm, ps, Da, kJ/mol, K
(kJ/mol = Da nm^2 / ps^2).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.sampling.langevin import make_langevin
from cmtjax.targets.molecules.parameters import MOLAR_GAS_CONSTANT
from cmtjax.targets.molecules.systems import MolecularSystem

Array = jax.Array


class MDTrajectory(NamedTuple):
  """Frames saved every ``save_every`` steps.

  Attributes:
    positions: [n_frames, n_chains, n_atoms, 3] nm.
    potential_energy: [n_frames, n_chains] kJ/mol.
    kinetic_energy: [n_frames, n_chains] kJ/mol.
    temperature: [n_frames, n_chains] K, 2 KE / (n_dof k_B) with n_dof = 3 n_atoms, from the
      full-step momenta (after the last half kick).
    temperature_mid: [n_frames, n_chains] K from the momenta right after the friction/noise
      step, p_mid = p - dt/2 F (the velocities OpenMM's LangevinMiddleIntegrator reports). For
      BAOAB these are closer to the Maxwell-Boltzmann distribution than the full-step momenta,
      whose kinetic temperature is biased low by O(dt^2) with 1 fs steps and stiff X-H bonds.
    time: [n_frames] ps.
  """
  positions: Array
  potential_energy: Array
  kinetic_energy: Array
  temperature: Array
  temperature_mid: Array
  time: Array


def langevin_md(system: MolecularSystem, key: Array, *, n_steps: int, save_every: int = 100,
                n_chains: int = 1, temperature: float | None = None, dt: float = 0.001,
                friction: float = 1.0, initial_positions: Array | None = None) -> MDTrajectory:
  """Runs BAOAB Langevin dynamics with the molecule's JAX energy (no regularisation).

  Args:
    system: the molecular system (its ``precision`` sets the dtype).
    key: PRNG key.
    n_steps: number of integration steps (a multiple of ``save_every``).
    save_every: steps between saved frames.
    n_chains: independent trajectories run in parallel.
    temperature: bath temperature in K (default: the system's).
    dt: time step in ps (default 1 fs; no constraints, so hydrogens need ~1 fs).
    friction: friction coefficient in 1/ps (0: velocity Verlet, energy-conserving).
    initial_positions: ``[n_atoms, 3]`` or ``[n_chains, n_atoms, 3]`` nm (default: the system's
      reference structure).

  Returns:
    The ``MDTrajectory`` of ``n_steps // save_every`` frames (the state after each block).
  """
  if n_steps % save_every:
    raise ValueError(f"n_steps={n_steps} must be a multiple of save_every={save_every}")
  dtype = system.energy_fns.dtype
  temperature = system.temperature if temperature is None else float(temperature)
  kt = MOLAR_GAS_CONSTANT * temperature
  n_atoms = system.n_atoms
  r0 = system.positions if initial_positions is None else initial_positions
  r0 = jnp.broadcast_to(jnp.asarray(r0, dtype), (n_chains, n_atoms, 3))
  langevin = make_langevin(system.energy_fns.batch_energy_and_forces, system.masses, kt, dt=dt,
                           friction=friction, dtype=dtype)
  to_t = 2.0 / (3 * n_atoms * MOLAR_GAS_CONSTANT)

  def observe(state):
    ke = langevin.kinetic_energy(state.momenta)
    ke_mid = langevin.kinetic_energy(state.momenta - 0.5 * dt * state.forces)
    return state.positions, state.energies, ke, to_t * ke, to_t * ke_mid

  def block(state, key_block):
    state = jax.lax.fori_loop(
      0, save_every, lambda i, s: langevin.step(jax.random.fold_in(key_block, i), s), state)
    return state, observe(state)

  @jax.jit
  def run(key):
    key_p, key_sim = jax.random.split(key)
    state = langevin.init(key_p, r0)
    _, frames = jax.lax.scan(block, state, jax.random.split(key_sim, n_steps // save_every))
    return frames

  positions, pe, ke, temp, temp_mid = run(key)
  time = dt * save_every * np.arange(1, n_steps // save_every + 1)
  return MDTrajectory(positions=positions, potential_energy=pe, kinetic_energy=ke,
                      temperature=temp, temperature_mid=temp_mid, time=jnp.asarray(time))
