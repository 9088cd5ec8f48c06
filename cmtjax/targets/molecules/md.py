"""Langevin molecular dynamics with the JAX force field (jax-md's BAOAB integrator).

Runs ``n_chains`` independent trajectories at once: the chain axis is the batch axis of the
energy, so one force evaluation serves all chains. The integrator is jax-md's
``simulate.nvt_langevin`` (BAOAB splitting: half kick, half drift, Ornstein-Uhlenbeck
friction/noise, half drift, force, half kick), the same splitting as OpenMM's
``LangevinMiddleIntegrator``. Units: nm, ps, Da, kJ/mol, K (kJ/mol = Da nm^2 / ps^2).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax_md import simulate, space
import numpy as np

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
    friction: friction coefficient in 1/ps.
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
  mass = jnp.asarray(system.masses, dtype)[:, None]  # [n_atoms, 1], broadcasts over chains
  batch_energy = system.energy_fns.batch_energy

  def total_energy(r):  # r: [n_chains, n_atoms, 3]; chains are independent
    return jnp.sum(batch_energy(r))

  _, shift = space.free()
  init_fn, step_fn = simulate.nvt_langevin(total_energy, shift, dt=dt, kT=kt, gamma=friction)
  key_p, key_sim = jax.random.split(key)
  momenta = jnp.sqrt(mass * kt) * jax.random.normal(key_p, r0.shape, dtype)
  n_dof = 3 * n_atoms

  def observe(state):
    pe = batch_energy(state.position)
    ke = 0.5 * jnp.sum(state.momentum**2 / mass, axis=(1, 2))
    p_mid = state.momentum - 0.5 * dt * state.force
    ke_mid = 0.5 * jnp.sum(p_mid**2 / mass, axis=(1, 2))
    to_t = 2.0 / (n_dof * MOLAR_GAS_CONSTANT)
    return state.position, pe, ke, to_t * ke, to_t * ke_mid

  def block(state, _):
    state = jax.lax.fori_loop(0, save_every, lambda i, s: step_fn(s), state)
    return state, observe(state)

  @jax.jit
  def run(key_sim, r0, momenta):
    state = init_fn(key_sim, r0, mass=mass, momenta=momenta)
    _, frames = jax.lax.scan(block, state, None, length=n_steps // save_every)
    return frames

  positions, pe, ke, temp, temp_mid = run(key_sim, r0, momenta)
  time = dt * save_every * np.arange(1, n_steps // save_every + 1)
  return MDTrajectory(positions=positions, potential_energy=pe, kinetic_energy=ke,
                      temperature=temp, temperature_mid=temp_mid, time=jnp.asarray(time))
