"""The JAX AMBER + OBC2 energy against OpenMM's Reference platform (double precision).

Tolerances:
  * float64: |dE| <= 1e-3 kJ/mol and |dF| <= 1e-2 kJ/mol/nm (max over 100 configurations per
    system); the measured agreement is ~1e-11 kJ/mol and ~1e-9 kJ/mol/nm.
  * float32: single precision has a unit round-off of 6e-8, and the energy is a sum of O(n^2)
    pair terms of either sign that cancel to a small total, so the error scales with the sum of
    the magnitudes of the terms, not with the total. We require
    |dE| <= 1e-5 * sum_terms |E_term| (measured <= 1.6e-6; at most 0.007 kJ/mol = 0.003 k_B T on
    configurations of up to 4e4 kJ/mol) and, per configuration, |dF| <= 1e-4 * max|F|
    (measured <= 7.2e-6; at most 0.23 kJ/mol/nm next to forces of up to 4e5 kJ/mol/nm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mdtraj
import numpy as np
import pytest

from cmtjax.targets.molecules import (create_openmm_system, dihedral, gbsa_obc_energy,
                                      make_energy_fn, nonbonded_energy, pair_squared_distances,
                                      params_from_system, to_components)
from cmtjax.targets.molecules.energy import (_pair_matrices, _squared_distances,
                                             gbsa_obc_energy_and_r2_grad,
                                             nonbonded_energy_and_r2_grad, torsion_energy,
                                             torsion_energy_and_grad)
from molecular_reference import molecular_system, openmm_reference, perturbed_configurations

_TERM_OF_FORCE = {
  "HarmonicBondForce": "bond",
  "HarmonicAngleForce": "angle",
  "PeriodicTorsionForce": "torsion",
  "NonbondedForce": "nonbonded",
  "GBSAOBCForce": "gb",
}


def test_float64_energy_and_forces_match_openmm(system_name):
  x, e_ref, f_ref, _, _ = openmm_reference(system_name)
  with jax.enable_x64(True):
    system = molecular_system(system_name, "float64")
    e, f = system.energy_and_forces(jnp.asarray(x.reshape(len(x), -1)))
    e, f = np.asarray(e), np.asarray(f).reshape(f_ref.shape)
  assert e.dtype == np.float64
  assert len(e) >= 100
  assert np.max(np.abs(e - e_ref)) < 1e-3
  assert np.max(np.abs(f - f_ref)) < 1e-2


def test_float32_energy_and_forces_match_openmm(system_name):
  x, e_ref, f_ref, groups, _ = openmm_reference(system_name)
  system = molecular_system(system_name, "float32")
  e, f = system.energy_and_forces(jnp.asarray(x.reshape(len(x), -1), jnp.float32))
  assert e.dtype == jnp.float32
  e, f = np.asarray(e, np.float64), np.asarray(f, np.float64).reshape(f_ref.shape)
  term_scale = np.sum(np.abs(groups), axis=1)
  assert np.all(np.abs(e - e_ref) <= 1e-5 * term_scale)
  f_scale = np.max(np.abs(f_ref), axis=(1, 2))
  assert np.all(np.max(np.abs(f - f_ref), axis=(1, 2)) <= 1e-4 * f_scale)


@pytest.mark.parametrize("system_name", ["aldp", "elil"])
def test_each_term_matches_its_openmm_force(system_name):
  x, _, _, groups, force_names = openmm_reference(system_name)
  with jax.enable_x64(True):
    system = molecular_system(system_name, "float64")
    terms = jax.jit(system.energy_fns.batch_terms)(jnp.asarray(x[:20]))
    for g, force_name in enumerate(force_names):
      np.testing.assert_allclose(np.asarray(terms[_TERM_OF_FORCE[force_name]]), groups[:20, g],
                                 rtol=1e-9, atol=1e-6, err_msg=force_name)


def test_vacuum_force_field_without_gb_matches_openmm():
  import openmm  # pylint: disable=g-import-not-at-top

  path = molecular_system("aldp").pdb_path
  system, _, positions = create_openmm_system(path, ("amber99sbildn.xml",))
  params = params_from_system(system)
  assert params.gbsa is None
  context = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                           openmm.Platform.getPlatformByName("Reference"))
  x = perturbed_configurations(positions, n=10, seed=3)
  with jax.enable_x64(True):
    fns = make_energy_fn(params, jnp.float64)
    terms = jax.jit(fns.batch_terms)(jnp.asarray(x))
    assert set(terms) == {"bond", "angle", "torsion", "nonbonded"}
    e = np.asarray(sum(terms.values()))
  for xi, ei in zip(x, e):
    context.setPositions(xi)
    e_ref = context.getState(getEnergy=True).getPotentialEnergy()._value
    assert abs(ei - e_ref) < 1e-6


def test_dihedral_matches_mdtraj_backbone_angles():
  system = molecular_system("ala4")
  traj = mdtraj.load(system.pdb_path)
  x = perturbed_configurations(system.positions, n=8, seed=1).astype(np.float32)
  traj = mdtraj.Trajectory(x, traj.topology)
  for compute in (mdtraj.compute_phi, mdtraj.compute_psi):
    idx, ref = compute(traj)
    P = to_components(jnp.asarray(x))
    ours = dihedral(*(tuple(p[idx[:, k]] for p in P) for k in range(4)))  # [n_dihedrals, batch]
    diff = np.angle(np.exp(1j * (np.asarray(ours).T - ref)))
    assert np.max(np.abs(diff)) < 1e-4


def test_single_and_batched_energies_agree():
  system = molecular_system("ala4")
  x = perturbed_configurations(system.positions, n=3, seed=2).astype(np.float32)
  fns = system.energy_fns
  batched = np.asarray(jax.jit(fns.batch_energy)(jnp.asarray(x)))
  energy = jax.jit(fns.energy)
  single = np.array([float(energy(jnp.asarray(xi))) for xi in x])
  np.testing.assert_allclose(single, batched, rtol=1e-6)
  terms = jax.jit(fns.terms)(jnp.asarray(x[0]))
  np.testing.assert_allclose(sum(float(v) for v in terms.values()), single[0], rtol=1e-6)
  # The hand-written VJP of the distance matrix against plain autodiff of the same energy.
  def plain(R):
    P = to_components(R)
    r2 = sum((p[:, None, :] - p[None, :, :]) ** 2 for p in P)
    return jnp.sum(nonbonded_energy(r2, *(jnp.asarray(a, jnp.float32) for a in
                                          _pair_matrices(system.params))))

  def ours(R):
    r2 = pair_squared_distances(to_components(R))
    return jnp.sum(nonbonded_energy(r2, *(jnp.asarray(a, jnp.float32) for a in
                                          _pair_matrices(system.params))))

  g_plain = np.asarray(jax.jit(jax.grad(plain))(jnp.asarray(x)))
  g_ours = np.asarray(jax.jit(jax.grad(ours))(jnp.asarray(x)))
  np.testing.assert_allclose(g_ours, g_plain, rtol=1e-4, atol=1e-3 * np.abs(g_plain).max())


@pytest.mark.parametrize("system_name", ["aldp", "elil"])
def test_closed_form_pair_gradients_match_autodiff(system_name):
  system = molecular_system(system_name)
  p, gb = system.params, system.params.gbsa
  scales = np.array([0.005, 0.02, 0.05, 0.1, 0.2])[:, None, None]
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    x = jnp.asarray(system.positions[None] + scales * rng.normal(size=(5,) + system.positions.shape))
    r2 = jax.jit(_squared_distances)(to_components(x))
    off_diag = ~np.eye(system.n_atoms, dtype=bool)[:, :, None]
    gb_args = (gb.charge, gb.radius, gb.scale, -100.0, 28.0)
    e, g = jax.jit(lambda r2: gbsa_obc_energy_and_r2_grad(r2, *gb_args))(r2)
    e_ad, g_ad = jax.jit(jax.value_and_grad(lambda r2: jnp.sum(gbsa_obc_energy(r2, *gb_args))))(r2)
    np.testing.assert_allclose(float(jnp.sum(e)), float(e_ad), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g), np.where(off_diag, np.asarray(g_ad), 0.0),
                               rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(g_ad))))
    nb_args = _pair_matrices(p)
    e, g = jax.jit(lambda r2: nonbonded_energy_and_r2_grad(r2, *nb_args))(r2)
    e_ad, g_ad = jax.jit(jax.value_and_grad(lambda r2: jnp.sum(nonbonded_energy(r2, *nb_args))))(r2)
    np.testing.assert_allclose(float(jnp.sum(e)), float(e_ad), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g), np.where(off_diag, np.asarray(g_ad), 0.0),
                               rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(g_ad))))


def test_closed_form_torsion_gradient_matches_autodiff():
  system = molecular_system("elil")
  p = system.params
  rng = np.random.default_rng(5)
  scales = np.array([0.005, 0.05, 0.2])[:, None, None]
  with jax.enable_x64(True):
    x = jnp.asarray(system.positions[None] + scales * rng.normal(size=(3,) + system.positions.shape))
    args = (jnp.asarray(p.torsion_idx), p.torsion_n, p.torsion_phase, p.torsion_k)
    scatter = np.zeros((4, p.n_atoms, len(p.torsion_idx)))
    for slot in range(4):
      scatter[slot, p.torsion_idx[:, slot], np.arange(len(p.torsion_idx))] = 1.0
    e, g = jax.jit(lambda P: torsion_energy_and_grad(P, *args, scatter))(to_components(x))
    e_ad, g_ad = jax.jit(jax.value_and_grad(lambda P: jnp.sum(torsion_energy(P, *args))))(
      to_components(x))
    np.testing.assert_allclose(float(jnp.sum(e)), float(e_ad), rtol=1e-12)
    for comp in range(3):
      np.testing.assert_allclose(np.asarray(g[comp]), np.asarray(g_ad[comp]), rtol=1e-8,
                                 atol=1e-10 * float(jnp.max(jnp.abs(g_ad[comp]))))


def test_float64_requires_x64():
  system = molecular_system("aldp", "float64")
  with jax.enable_x64(False):
    with pytest.raises(RuntimeError, match="x64"):
      system.energy(np.zeros((1, 66), np.float32))


def test_the_force_field_dihedral_is_the_coordinate_dihedral():
  """energy.dihedral (structure-of-arrays layout) and topology.dihedral_from_points (NumPy
  and JAX) are one formula."""
  from cmtjax.targets.molecules.topology import dihedral_from_points
  pts = np.random.default_rng(3).normal(size=(4, 50, 3))  # 4 points x 50 dihedrals
  ref = dihedral_from_points(*pts)
  assert isinstance(ref, np.ndarray) and ref.dtype == np.float64
  np.testing.assert_allclose(np.asarray(dihedral_from_points(*map(jnp.asarray, pts))), ref,
                             atol=1e-5)
  soa = [tuple(jnp.asarray(p[:, k:k + 1]) for k in range(3)) for p in pts]  # 3 x [50, 1]
  np.testing.assert_allclose(np.asarray(dihedral(*soa))[:, 0], ref, atol=1e-5)
