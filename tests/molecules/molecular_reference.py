"""Shared helpers: OpenMM Reference-platform energies and forces on perturbed structures.

A uniquely named module (not ``conftest``) so that ``from molecular_reference import ...`` cannot
pick up another directory's conftest when the whole suite runs.
"""

from __future__ import annotations

import functools

import numpy as np

from cmtjax.targets.molecules import MOLECULAR_SYSTEMS, load_molecular_system

N_CONFIGS = 100
# Perturbation scales (nm) cycled over the configurations: from thermal-like to strongly
# distorted (bond energies of hundreds of kJ/mol).
SIGMAS = (0.005, 0.01, 0.02, 0.03)


@functools.lru_cache(maxsize=None)
def molecular_system(name: str, precision: str = "float32"):
  return load_molecular_system(name, precision=precision)


def perturbed_configurations(positions: np.ndarray, n: int = N_CONFIGS, seed: int = 0):
  """[n, n_atoms, 3] positions: reference + Gaussian noise with scales from SIGMAS."""
  rng = np.random.default_rng(seed)
  sig = np.array([SIGMAS[i % len(SIGMAS)] for i in range(n)])[:, None, None]
  return positions[None] + sig * rng.normal(size=(n,) + positions.shape)


@functools.lru_cache(maxsize=None)
def openmm_reference(name: str):
  """OpenMM Reference energies [n] (kJ/mol), forces [n, n_atoms, 3] (kJ/mol/nm) and the
  per-force-group energies [n, n_forces] on ``perturbed_configurations``."""
  import openmm  # pylint: disable=g-import-not-at-top
  from openmm import unit  # pylint: disable=g-import-not-at-top

  from cmtjax.targets.molecules import create_openmm_system  # pylint: disable=g-import-not-at-top

  system_jax = molecular_system(name)
  system, _, positions = create_openmm_system(system_jax.pdb_path)
  force_names = []
  for i, force in enumerate(system.getForces()):
    force.setForceGroup(i)
    force_names.append(type(force).__name__)
  context = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                           openmm.Platform.getPlatformByName("Reference"))
  x = perturbed_configurations(positions)
  energies, forces, groups = [], [], []
  for xi in x:
    context.setPositions(xi)
    state = context.getState(getEnergy=True, getForces=True)
    energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    forces.append(state.getForces(asNumpy=True).value_in_unit(
      unit.kilojoule_per_mole / unit.nanometer))
    groups.append([context.getState(getEnergy=True, groups={g}).getPotentialEnergy()
                   .value_in_unit(unit.kilojoule_per_mole) for g in range(len(force_names))])
  return x, np.array(energies), np.array(forces), np.array(groups), tuple(force_names)
