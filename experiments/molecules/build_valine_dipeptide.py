"""Builds the capped valine dipeptide Ace-Val-Nme used as a "your own molecule" test system.

Run once (by hand) from the repository root:

  python experiments/molecules/build_valine_dipeptide.py

It starts from the shipped alanine dipeptide, turns the alanine into a valine (two of the
methyl hydrogens become the CG1 / CG2 carbons at a C-C bond length, the third becomes HB),
lets OpenMM's ``Modeller`` add the missing hydrogens, and energy-minimises the structure with
AMBER99SB-ILDN + OBC (no cutoff, no constraints). Needs only OpenMM.

Output: ``tests/data/valdp.pdb`` (28 atoms).
"""

from __future__ import annotations

import io
import os

import numpy as np
import openmm
from openmm import app, unit

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SOURCE = os.path.join(ROOT, "cmtjax", "targets", "molecules", "data", "aldp.pdb")
OUT = os.path.join(ROOT, "tests", "data", "valdp.pdb")
CC_BOND, CH_BOND = 0.153, 0.109  # nm


def _mutated_pdb_text() -> str:
  pdb = app.PDBFile(SOURCE)
  pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
  atoms = list(pdb.topology.atoms())
  cb = pos[next(a.index for a in atoms if a.residue.name == "ALA" and a.name == "CB")]
  rename = {"HB1": ("CG1", CC_BOND), "HB2": ("CG2", CC_BOND), "HB3": ("HB", CH_BOND)}
  lines = []
  for a in atoms:
    name, res, p = a.name, a.residue.name, pos[a.index]
    if res == "ALA":
      res = "VAL"
      if name in rename:
        name, bond = rename[name]
        p = cb + bond * (p - cb) / np.linalg.norm(p - cb)
    element = "C" if name.startswith("C") else a.element.symbol
    x, y, z = 10.0 * p  # PDB files hold Angstrom
    lines.append(f"ATOM  {a.index + 1:5d} {name:<4s} {res:3s} A{a.residue.index + 1:4d}    "
                 f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {element:>2s}")
  return "\n".join(lines + ["END", ""])


def build(forcefield_files=("amber99sbildn.xml", "amber99_obc.xml")) -> None:
  pdb = app.PDBFile(io.StringIO(_mutated_pdb_text()))
  forcefield = app.ForceField(*forcefield_files)
  modeller = app.Modeller(pdb.topology, pdb.positions)
  modeller.addHydrogens(forcefield, pH=7.0)
  system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff,
                                   constraints=None, rigidWater=False)
  context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                           openmm.Platform.getPlatformByName("Reference"))
  context.setPositions(modeller.positions)
  openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
  state = context.getState(getEnergy=True, getPositions=True)
  pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
  os.makedirs(os.path.dirname(OUT), exist_ok=True)
  with open(OUT, "w") as f:
    app.PDBFile.writeFile(modeller.topology, pos * unit.nanometer, f, keepIds=False)
  print(f"valdp: {system.getNumParticles()} atoms, E_min={state.getPotentialEnergy()} -> {OUT}")


if __name__ == "__main__":
  build()
