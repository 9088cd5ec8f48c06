"""Force-field routes beyond the default: Amber14 with OBC2/OBC1 implicit solvent (OpenMM's
``CustomGBForce`` from ``implicit/obc2.xml``), a molecule of the user's own (the valine
dipeptide in tests/data), and the one-line errors for what cmtjax cannot evaluate."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.targets.molecules import create_openmm_system, make_molecular_system
from cmtjax.targets.molecules.energy import (_squared_distances, gbsa_obc_energy,
                                             gbsa_obc_energy_and_r2_grad, to_components)
from molecular_reference import perturbed_configurations

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
VALDP = os.path.join(DATA, "valdp.pdb")
ALDP = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "cmtjax",
                    "targets", "molecules", "data", "aldp.pdb")
AMBER14_OBC2 = ("amber14-all.xml", "implicit/obc2.xml")


def _engulfed(positions):
  """The structure with the first hydrogen moved to 0.003 nm from its carbon: the hydrogen
  lies inside the carbon's scaled GB sphere (thermal or 0.1 nm noise never gets there)."""
  x = np.array(positions, copy=True)
  x[1] = x[0] + np.array([0.003, 0.0, 0.0])
  return x


def _openmm_energies_and_forces(pdb, forcefield, x):
  import openmm  # pylint: disable=g-import-not-at-top
  from openmm import unit  # pylint: disable=g-import-not-at-top
  system, _, _ = create_openmm_system(pdb, forcefield)
  context = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                           openmm.Platform.getPlatformByName("Reference"))
  e, f = [], []
  for xi in x:
    context.setPositions(xi)
    state = context.getState(getEnergy=True, getForces=True)
    e.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    f.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
  return np.array(e), np.array(f)


@pytest.mark.parametrize("pdb,forcefield", [
    (ALDP, AMBER14_OBC2), (VALDP, AMBER14_OBC2), (VALDP, ("amber14-all.xml", "implicit/obc1.xml")),
    (VALDP, ("amber99sbildn.xml", "amber99_obc.xml"))])
def test_energy_and_forces_match_openmm_in_float64(pdb, forcefield):
  system = make_molecular_system(pdb, forcefield, precision="float64")
  gb = system.params.gbsa
  assert gb is not None and gb.engulfed_term == (forcefield[1] == "amber99_obc.xml")
  # Thermal to strongly distorted structures, and one with an atom inside a neighbour's
  # scaled sphere (the one place the two OBC routes differ).
  x = np.concatenate([perturbed_configurations(system.positions, n=24, seed=7),
                      _engulfed(system.positions)[None]])
  e_ref, f_ref = _openmm_energies_and_forces(pdb, forcefield, x)
  with jax.enable_x64(True):
    e, f = system.energy_and_forces(jnp.asarray(x.reshape(len(x), -1)))
    e, f = np.asarray(e), np.asarray(f).reshape(f_ref.shape)
  assert np.max(np.abs(e - e_ref)) < 1e-6 * max(1.0, np.abs(e_ref).max())
  assert np.max(np.abs(f - f_ref)) < 1e-6 * np.abs(f_ref).max()


def test_the_obc2_routes_differ_only_by_the_engulfed_term():
  """amber99_obc.xml's GBSAOBCForce adds a term for an atom engulfed by a neighbour's scaled
  sphere; the CustomGBForce does not. With the term switched on or off, the closed-form
  gradient matches autodiff, and the energies differ exactly where an atom is engulfed."""
  system = make_molecular_system(VALDP, AMBER14_OBC2)
  gb = system.params.gbsa
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    x = system.positions[None] + np.array([0.005, 0.05, 0.1])[:, None, None] * rng.normal(
        size=(3,) + system.positions.shape)
    x = jnp.asarray(np.concatenate([x, _engulfed(system.positions)[None]]))
    r2 = jax.jit(_squared_distances)(to_components(x))
    off_diag = ~np.eye(system.n_atoms, dtype=bool)[:, :, None]
    energies = []
    for engulfed in (False, True):
      kw = dict(offset=gb.offset, obc=(gb.alpha, gb.beta, gb.gamma), engulfed_term=engulfed)
      args = (gb.charge, gb.radius, gb.scale, -100.0, 28.0)
      e, g = jax.jit(lambda r2: gbsa_obc_energy_and_r2_grad(r2, *args, **kw))(r2)
      e_ad, g_ad = jax.jit(jax.value_and_grad(
          lambda r2: jnp.sum(gbsa_obc_energy(r2, *args, **kw))))(r2)
      np.testing.assert_allclose(float(jnp.sum(e)), float(e_ad), rtol=1e-12)
      np.testing.assert_allclose(np.asarray(g), np.where(off_diag, np.asarray(g_ad), 0.0),
                                 rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(g_ad))))
      energies.append(np.asarray(e))
    r = np.sqrt(np.asarray(r2))
    o = gb.radius - gb.offset
    engulfed = np.any((o[:, None, None] < (o * gb.scale)[None, :, None] - r) & off_diag, axis=(0, 1))
    np.testing.assert_array_equal(energies[0] != energies[1], engulfed)
    assert engulfed.any() and not engulfed.all()


def test_unsupported_implicit_solvent_is_named_with_the_supported_ones():
  with pytest.raises(ValueError, match="unsupported CustomGBForce.*supported implicit solvent: "
                                       "GBSAOBCForce or the OBC CustomGBForce"):
    make_molecular_system(VALDP, ("amber14-all.xml", "implicit/gbn2.xml"))


def test_a_residue_the_force_field_cannot_match_is_named(tmp_path):
  text = open(VALDP).read().replace("VAL A", "XYZ A")
  bad = tmp_path / "bad.pdb"
  bad.write_text(text)
  with pytest.raises(ValueError, match=r"bad.pdb: the force field .* cannot parameterise it: "
                                       r"No template found for residue \d+ \(XYZ\)") as e:
    make_molecular_system(str(bad))
  assert "\n" not in str(e.value)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    make_molecular_system(str(tmp_path / "missing.pdb"))
