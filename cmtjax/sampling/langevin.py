"""One BAOAB Langevin step for batches of configurations, each at its own temperature.

The step that ``cmtjax.targets.molecules.md.langevin_md`` and the replica-exchange sampler
(``cmtjax.sampling.replica_exchange``) both run. With mass m, force F = -dE/dr, friction gamma
and time step dt, one step is

    B: p <- p + dt/2 F(r)               A: r <- r + dt/2 p / m
    O: p <- c1 p + sqrt((1 - c1^2) m kT) xi,   c1 = exp(-gamma dt),  xi ~ N(0, 1)
    A: r <- r + dt/2 p / m              B: p <- p + dt/2 F(r)

(the splitting of OpenMM's ``LangevinMiddleIntegrator``; no constraints). Configurations are
independent: the batch axes lead and kT broadcasts against them, so a ladder of temperatures is
one array ``kt`` of the batch shape. Each step evaluates energy and forces once, at the new
positions, and keeps both (the energy is free with the forces). At ``friction=0`` the O step is
left out and the step is velocity Verlet.

Units are the caller's; for molecules nm, ps, Da, kJ/mol (kJ/mol = Da nm^2 / ps^2).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
EnergyAndForcesFn = Callable[[Array], tuple]


class LangevinState(NamedTuple):
  """Positions and momenta of a batch of configurations, with energy and forces at them.

  Attributes:
    positions: [*batch, n_atoms, 3].
    momenta: [*batch, n_atoms, 3].
    forces: [*batch, n_atoms, 3], -dE/d positions.
    energies: [*batch] potential energies of ``positions``.
  """
  positions: Array
  momenta: Array
  forces: Array
  energies: Array


class Langevin(NamedTuple):
  """Pure functions of a BAOAB integrator (built by ``make_langevin``).

  Attributes:
    init: ``(key, positions) -> LangevinState``: positions [*batch, n_atoms, 3], momenta drawn
      from the Maxwell-Boltzmann distribution at each configuration's kT; the energy is
      evaluated under ``jax.jit``, so ``init`` may be called outside jit.
    step: ``(key, state) -> LangevinState``, one BAOAB step.
    kinetic_energy: ``momenta -> [*batch]``, sum of p^2 / (2 m) over atoms and axes.
  """
  init: Callable
  step: Callable
  kinetic_energy: Callable


def make_langevin(energy_and_forces: EnergyAndForcesFn, masses, kt, *, dt: float,
                  friction: float, dtype=jnp.float32) -> Langevin:
  """Builds the BAOAB step for a batch of independent configurations.

  Args:
    energy_and_forces: ``positions [*batch, n_atoms, 3] -> (energies [*batch], forces
      [*batch, n_atoms, 3])``, forces = -dE/d positions.
    masses: [n_atoms] particle masses.
    kt: Boltzmann constant times temperature, a scalar or an array that broadcasts against
      the batch shape (e.g. [n_replicas, 1] for a temperature per replica slot).
    dt: time step.
    friction: friction coefficient gamma (1 / time); 0 gives velocity Verlet.
    dtype: floating dtype of positions, momenta and the noise.

  Returns:
    The ``Langevin`` functions.
  """
  if dt <= 0 or friction < 0:
    raise ValueError(f"need dt > 0 and friction >= 0, got dt={dt}, friction={friction}")
  mass = jnp.asarray(masses, dtype)[:, None]  # [n_atoms, 1]
  kt_b = jnp.asarray(kt, dtype)[..., None, None]  # broadcasts against [*batch, n_atoms, 3]
  c1 = float(np.exp(-friction * dt))
  noise_scale = jnp.sqrt((1.0 - c1**2) * mass * kt_b)
  half = 0.5 * dt
  jitted_energy_and_forces = jax.jit(energy_and_forces)  # init outside jit: not op by op

  def init(key: Array, positions: Array) -> LangevinState:
    r = jnp.asarray(positions, dtype)
    momenta = jnp.sqrt(mass * kt_b) * jax.random.normal(key, r.shape, dtype)
    e, f = jitted_energy_and_forces(r)
    return LangevinState(positions=r, momenta=momenta, forces=f, energies=e)

  def step(key: Array, state: LangevinState) -> LangevinState:
    p = state.momenta + half * state.forces  # B
    r = state.positions + half * p / mass  # A
    if friction > 0:
      p = c1 * p + noise_scale * jax.random.normal(key, p.shape, dtype)  # O
    r = r + half * p / mass  # A
    e, f = energy_and_forces(r)
    p = p + half * f  # B
    return LangevinState(positions=r, momenta=p, forces=f, energies=e)

  def kinetic_energy(momenta: Array) -> Array:
    return 0.5 * jnp.sum(momenta**2 / mass, axis=(-2, -1))

  return Langevin(init=init, step=step, kinetic_energy=kinetic_energy)
