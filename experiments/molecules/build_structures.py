"""Builds the shipped molecular structures offline and energy-minimises them with OpenMM.

Run once (by hand) from the repository root:

  python experiments/molecules/build_structures.py

It needs ``PeptideBuilder`` (and its dependency Biopython) at build time only; the package does
not import them. Heavy atoms of the residues come from PeptideBuilder's internal-coordinate
geometry (L-amino acids), the ACE / NME caps are placed here from standard internal
coordinates, hydrogens are added by OpenMM's ``Modeller`` at pH 7 (zwitterionic termini for the
uncapped ELIL, deprotonated Glu), and the structure is minimised with AMBER99SB-ILDN + OBC
implicit solvent (no cutoff, no constraints), the same force field as the JAX energy.

Output: ``cmtjax/targets/molecules/data/{aldp,ala4,ala6,elil}.pdb``.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import openmm
from openmm import app, unit
import PeptideBuilder
from PeptideBuilder import Geometry

from cmtjax.targets.molecules.topology import dihedral_from_points

DATA_DIR = os.path.join(
    os.path.dirname(__file__), "..", "..", "cmtjax", "targets", "molecules", "data")

# name -> (one-letter sequence, capped, backbone (phi, psi) in degrees used for the build)
SYSTEMS = {
  "aldp": ("A", True, (-80.0, 75.0)),
  "ala4": ("AAA", True, (-75.0, 145.0)),
  "ala6": ("AAAAA", True, (-75.0, 145.0)),
  "elil": ("ELIL", False, (-75.0, 145.0)),
}

THREE = {"A": "ALA", "E": "GLU", "L": "LEU", "I": "ILE"}


def _place(a, b, c, bond, angle_deg, torsion_deg):
  """Position d with |cd| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion."""
  angle = math.radians(angle_deg)
  torsion = math.radians(torsion_deg)
  bc = c - b
  bc /= np.linalg.norm(bc)
  n = np.cross(b - a, bc)
  n /= np.linalg.norm(n)
  m = np.cross(n, bc)
  d2 = np.array([-bond * math.cos(angle),
                 bond * math.sin(angle) * math.cos(torsion),
                 bond * math.sin(angle) * math.sin(torsion)])
  return c + d2[0] * bc + d2[1] * m + d2[2] * n


def _dihedral(a, b, c, d):
  """Dihedral a-b-c-d in degrees."""
  return math.degrees(float(dihedral_from_points(*(np.asarray(p, np.float64)
                                                   for p in (a, b, c, d)))))


def _heavy_atoms(seq, capped, phi, psi):
  """Residue list [(resname, [(atom name, xyz in Angstrom)])] of heavy atoms."""
  geos = []
  for aa in seq:
    g = Geometry.geometry(aa)
    g.phi, g.psi_im1 = phi, psi
    geos.append(g)
  structure = PeptideBuilder.initialize_res(geos[0])
  for g in geos[1:]:
    structure = PeptideBuilder.add_residue(structure, g)
  if not capped:
    PeptideBuilder.add_terminal_OXT(structure)
  residues = []
  for res in structure.get_residues():
    residues.append((res.get_resname(), [(a.get_id(), np.array(a.coord, float)) for a in res]))
  if capped:
    first = dict(residues[0][1])
    n, ca, c = first["N"], first["CA"], first["C"]
    c_ace = _place(c, ca, n, 1.335, 121.9, phi)
    ch3 = _place(ca, n, c_ace, 1.522, 116.6, 180.0)
    o_ace = _place(ca, n, c_ace, 1.229, 122.5, 0.0)
    residues.insert(0, ("ACE", [("CH3", ch3), ("C", c_ace), ("O", o_ace)]))
    last = dict(residues[-1][1])
    n, ca, c, o = last["N"], last["CA"], last["C"], last["O"]
    psi_last = _dihedral(n, ca, c, o) + 180.0
    n_nme = _place(n, ca, c, 1.335, 116.2, psi_last)
    c_nme = _place(ca, c, n_nme, 1.449, 121.9, 180.0)
    residues.append(("NME", [("N", n_nme), ("C", c_nme)]))
  return residues


def _pdb_text(residues):
  lines, serial = [], 1
  for i, (resname, atoms) in enumerate(residues):
    for name, xyz in atoms:
      element = name[0]
      lines.append(
        f"ATOM  {serial:5d} {name:<4s} {resname:3s} A{i + 1:4d}    "
        f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00  0.00          {element:>2s}")
      serial += 1
  lines.append("TER")
  lines.append("END")
  return "\n".join(lines) + "\n"


def _check_l_chirality(topology, positions_nm):
  """Asserts every CA is L (improper N-C-CA-CB near +120 degrees)."""
  for res in topology.residues():
    atoms = {a.name: a.index for a in res.atoms()}
    if "CB" not in atoms:
      continue
    x = [positions_nm[atoms[k]] for k in ("N", "C", "CA", "CB")]
    d = _dihedral(*x)
    assert 90.0 < d < 150.0, (res.name, d)


def build(name, forcefield_files=("amber99sbildn.xml", "amber99_obc.xml")):
  seq, capped, (phi, psi) = SYSTEMS[name]
  residues = _heavy_atoms(seq, capped, phi, psi)
  pdb = app.PDBFile(io.StringIO(_pdb_text(residues)))
  forcefield = app.ForceField(*forcefield_files)
  modeller = app.Modeller(pdb.topology, pdb.positions)
  modeller.addHydrogens(forcefield, pH=7.0)
  system = forcefield.createSystem(
    modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
  integrator = openmm.VerletIntegrator(0.001)
  context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
  context.setPositions(modeller.positions)
  e0 = context.getState(getEnergy=True).getPotentialEnergy()
  openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
  state = context.getState(getEnergy=True, getPositions=True, getForces=True)
  pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
  forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
  _check_l_chirality(modeller.topology, pos)
  path = os.path.join(DATA_DIR, f"{name}.pdb")
  with open(path, "w") as f:
    app.PDBFile.writeFile(modeller.topology, pos * unit.nanometer, f, keepIds=False)
  # The PDB stores 3 decimals in Angstrom; report the energy at the rounded positions.
  reread = app.PDBFile(path)
  context.setPositions(reread.positions)
  e1 = context.getState(getEnergy=True).getPotentialEnergy()
  print(f"{name}: {system.getNumParticles()} atoms, E_start={e0}, E_min={state.getPotentialEnergy()}, "
        f"E_min(rounded)={e1}, max |F|={np.abs(forces).max():.3g} kJ/mol/nm -> {path}")


if __name__ == "__main__":
  for system_name in SYSTEMS:
    build(system_name)
