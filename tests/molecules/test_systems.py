"""Shipped structures, the molecular Target, and the bring-your-own-PDB factory."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import mdtraj
import numpy as np
import pytest

from cmtjax.targets.base import Target
from cmtjax.targets.molecules import (MOLAR_GAS_CONSTANT, MOLECULAR_SYSTEMS,
                                      make_molecular_system, make_molecular_target)
from molecular_reference import molecular_system, openmm_reference


def test_shipped_structures(system_name):
  system = molecular_system(system_name)
  _, n_atoms, _ = MOLECULAR_SYSTEMS[system_name]
  assert system.n_atoms == n_atoms
  assert system.target.dim == 3 * n_atoms
  x_ref, _, _, _, _ = openmm_reference(system_name)
  # Same batch shape as the OpenMM comparison (no new compilation): the minimum in row 0.
  x = np.concatenate([system.positions[None], x_ref[1:]]).reshape(len(x_ref), -1)
  _, f = system.energy_and_forces(jnp.asarray(x, jnp.float32))
  # Energy-minimised before shipping; the PDB keeps 1e-4 nm, so forces are small, not zero.
  assert float(jnp.max(jnp.abs(f[0]))) < 60.0
  # L-amino acids: improper dihedral N-C-CA-CB is positive (about +120 degrees).
  traj = mdtraj.load(system.pdb_path)
  top = traj.topology
  for res in top.residues:
    if res.name in ("ACE", "NME") or res.name == "GLY":
      continue
    idx = [[top.select(f"resid {res.index} and name {a}")[0] for a in ("N", "C", "CA", "CB")]]
    chi = mdtraj.compute_dihedrals(traj, np.array(idx))[0, 0]
    assert 1.5 < chi < 2.6, (res, chi)
  if system_name == "elil":
    charge = system.params.charge.sum()
    assert abs(charge + 1.0) < 1e-6  # NH3+, Glu COO-, C-terminal COO-


def test_target_log_prob_is_reduced_energy():
  target = make_molecular_target("aldp", temperature=350.0)
  assert isinstance(target, Target)
  assert target.name == "aldp"
  assert target.info["n_atoms"] == 22
  assert target.info["temperature"] == 350.0
  np.testing.assert_allclose(target.info["kbt"], 350.0 * MOLAR_GAS_CONSTANT)
  np.testing.assert_allclose(target.info["kbt"], 2.9101, atol=1e-4)
  x, e_ref, _, _, _ = openmm_reference("aldp")
  lp = target.log_prob(jnp.asarray(x[:10].reshape(10, -1), jnp.float32))
  assert lp.shape == (10,)
  np.testing.assert_allclose(np.asarray(lp), -e_ref[:10] / target.info["kbt"], rtol=1e-5)


def test_float64_target_log_prob():
  target = make_molecular_target("aldp", precision="float64")
  x, e_ref, _, _, _ = openmm_reference("aldp")
  with jax.enable_x64(True):
    lp = target.log_prob(jnp.asarray(x[:10].reshape(10, -1)))
    assert lp.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(lp), -e_ref[:10] / target.info["kbt"], rtol=1e-10)


def test_log_prob_handles_clashes_without_poisoning_the_batch():
  system = molecular_system("aldp")
  x = np.repeat(system.positions.reshape(1, -1), 4, axis=0).astype(np.float32)
  x[1, 3:6] = x[1, 0:3]  # two bonded atoms on top of each other: non-finite energy
  x[2, 9:12] = x[2, 45:48] + 1e-3  # a 1e-3 nm non-bonded clash: finite, huge energy
  x = jnp.asarray(x)
  lp, info = system.log_prob_with_info(x)
  assert int(info.n_nonfinite) == 1
  assert int(info.n_regularised) == 2
  assert bool(jnp.all(jnp.isfinite(lp)))
  kbt = system.kbt
  np.testing.assert_allclose(float(lp[1]), -1e9 / kbt, rtol=1e-6)
  assert float(lp[2]) < -1e8 / kbt
  np.testing.assert_allclose(float(lp[0]), float(lp[3]))
  g = jax.grad(lambda y: jnp.sum(system.target.log_prob(y)))(x)
  assert bool(jnp.all(jnp.isfinite(g)))
  assert float(jnp.max(jnp.abs(g[1]))) == 0.0
  # The other rows keep their exact gradient: -F / kT.
  _, f = system.energy_and_forces(x)
  np.testing.assert_allclose(np.asarray(g[0]), np.asarray(f[0]) / kbt, rtol=1e-3, atol=1e-2)


def test_chunked_evaluation_matches_one_batch():
  system = molecular_system("elil")
  x, e_ref, f_ref, _, _ = openmm_reference("elil")
  chunked = make_molecular_system(system.pdb_path, chunk_size=16)
  assert chunked.target.info["chunk_size"] == 16
  e, f = chunked.energy_and_forces(jnp.asarray(x.reshape(len(x), -1), jnp.float32))
  np.testing.assert_allclose(np.asarray(e), e_ref, rtol=1e-5, atol=1e-2)
  np.testing.assert_allclose(np.asarray(f).reshape(f_ref.shape), f_ref,
                             atol=1e-4 * np.abs(f_ref).max())


def test_bring_your_own_pdb(tmp_path):
  path = tmp_path / "my_molecule.pdb"
  shutil.copy(molecular_system("ala4").pdb_path, path)
  system = make_molecular_system(str(path), temperature=300.0)
  assert system.name == "my_molecule"
  assert system.target.info["topology"] == str(path)
  x, e_ref, _, _, _ = openmm_reference("ala4")
  e = system.energy(jnp.asarray(x[:5].reshape(5, -1), jnp.float32))
  np.testing.assert_allclose(np.asarray(e), e_ref[:5], rtol=1e-5)


def test_bad_arguments():
  with pytest.raises(ValueError):
    make_molecular_target("not-a-molecule")
  with pytest.raises(ValueError):
    make_molecular_target("aldp", precision="float16")
  with pytest.raises(ValueError, match="unknown keyword"):
    make_molecular_target("aldp", temprature=300.0)
  target = molecular_system("aldp").target
  with pytest.raises(AssertionError):
    target.log_prob(jnp.zeros((2, 65)))
