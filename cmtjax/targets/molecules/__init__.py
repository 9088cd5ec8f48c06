"""Molecular targets: AMBER99SB-ILDN with OBC2 implicit solvent, evaluated in JAX."""

from __future__ import annotations

from cmtjax.targets.molecules.energy import (EnergyFns, angle_energy, bond_angle, bond_energy,
                                             dihedral, gbsa_obc_energy, make_energy_fn,
                                             nonbonded_energy, obc_born_radii,
                                             pair_squared_distances, to_components,
                                             torsion_energy)
from cmtjax.targets.molecules.md import MDTrajectory, langevin_md
from cmtjax.targets.molecules.parameters import (DEFAULT_FORCEFIELD_FILES, MOLAR_GAS_CONSTANT,
                                                 ONE_4PI_EPS0, ForceFieldParams, GBSAParams,
                                                 create_openmm_system, params_from_system)
from cmtjax.targets.molecules.regularise import EnergyInfo, regularise_energy
from cmtjax.targets.molecules.systems import (DATA_DIR, MOLECULAR_SYSTEMS, MolecularSystem,
                                              MoleculeSpec,
                                              default_chunk_size, load_molecular_system,
                                              make_molecular_system, make_molecular_target)
from cmtjax.targets.molecules.topology import (MolecularTopology, backbone_dihedral_pairs,
                                               chiral_centres, chirality_signs,
                                               dihedral_angles, load_topology,
                                               peptide_bonds, wrong_chirality)
from cmtjax.metrics.basins import aldp_basin_populations
from cmtjax.targets.molecules.reference import load_reference, load_reference_set
from cmtjax.targets.molecules.zmatrix import ZMatrix, build_zmatrix

__all__ = [
  "DATA_DIR",
  "DEFAULT_FORCEFIELD_FILES",
  "EnergyFns",
  "EnergyInfo",
  "ForceFieldParams",
  "GBSAParams",
  "MDTrajectory",
  "MOLAR_GAS_CONSTANT",
  "MOLECULAR_SYSTEMS",
  "MolecularSystem",
  "MolecularTopology",
  "MoleculeSpec",
  "ZMatrix",
  "aldp_basin_populations",
  "backbone_dihedral_pairs",
  "build_zmatrix",
  "chiral_centres",
  "chirality_signs",
  "dihedral_angles",
  "load_reference",
  "load_reference_set",
  "load_topology",
  "peptide_bonds",
  "wrong_chirality",
  "ONE_4PI_EPS0",
  "angle_energy",
  "bond_angle",
  "bond_energy",
  "create_openmm_system",
  "default_chunk_size",
  "dihedral",
  "gbsa_obc_energy",
  "langevin_md",
  "load_molecular_system",
  "make_energy_fn",
  "make_molecular_system",
  "make_molecular_target",
  "nonbonded_energy",
  "obc_born_radii",
  "pair_squared_distances",
  "params_from_system",
  "regularise_energy",
  "to_components",
  "torsion_energy",
]
