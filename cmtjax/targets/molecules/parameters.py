"""Force-field parameters read once from an OpenMM ``System`` into plain NumPy arrays.

The JAX energy (``energy.py``) never calls OpenMM: OpenMM is used only here, at construction
time, to assign AMBER parameters to a topology. Any PDB plus any force-field files that produce
the supported force classes work (HarmonicBondForce, HarmonicAngleForce, PeriodicTorsionForce,
NonbondedForce without cutoff, and optionally GBSAOBCForce).

Units: nm, rad, kJ/mol, elementary charges.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

# Coulomb constant 1 / (4 pi eps0) in kJ mol^-1 nm e^-2, the value OpenMM uses.
ONE_4PI_EPS0 = 138.93545764438198
# Molar gas constant in kJ mol^-1 K^-1 (k_B N_A).
MOLAR_GAS_CONSTANT = 8.31446261815324e-3

DEFAULT_FORCEFIELD_FILES = ("amber99sbildn.xml", "amber99_obc.xml")


class GBSAParams(NamedTuple):
  """OBC generalised-Born (GBSAOBCForce) parameters.

  Attributes:
    charge: [n_atoms] partial charges (e).
    radius: [n_atoms] atomic GB radii (nm).
    scale: [n_atoms] overlap scale factors (dimensionless).
    solute_dielectric: scalar.
    solvent_dielectric: scalar.
    surface_area_energy: ACE surface tension (kJ/mol/nm^2).
  """
  charge: np.ndarray
  radius: np.ndarray
  scale: np.ndarray
  solute_dielectric: float
  solvent_dielectric: float
  surface_area_energy: float


class ForceFieldParams(NamedTuple):
  """All parameters of the supported AMBER energy terms, as NumPy arrays.

  Attributes:
    n_atoms: number of atoms.
    masses: [n_atoms] in Da (g/mol).
    bond_idx: [n_bonds, 2] atom indices; bond_r0: [n_bonds] nm; bond_k: [n_bonds] kJ/mol/nm^2.
    angle_idx: [n_angles, 3]; angle_theta0: [n_angles] rad; angle_k: [n_angles] kJ/mol/rad^2.
    torsion_idx: [n_torsions, 4]; torsion_n: [n_torsions] periodicity; torsion_phase:
      [n_torsions] rad; torsion_k: [n_torsions] kJ/mol. Proper and improper torsions alike.
    charge: [n_atoms] e; sigma: [n_atoms] nm; epsilon: [n_atoms] kJ/mol (Lennard-Jones,
      Lorentz-Berthelot combination for non-excepted pairs).
    exception_idx: [n_exceptions, 2]; exception_qq: [n_exceptions] e^2 (charge product);
      exception_sigma: [n_exceptions] nm; exception_epsilon: [n_exceptions] kJ/mol. Exceptions
      replace the default pair interaction (zero for 1-2 and 1-3 pairs, scaled for 1-4 pairs).
    gbsa: OBC parameters, or ``None`` for vacuum.
  """
  n_atoms: int
  masses: np.ndarray
  bond_idx: np.ndarray
  bond_r0: np.ndarray
  bond_k: np.ndarray
  angle_idx: np.ndarray
  angle_theta0: np.ndarray
  angle_k: np.ndarray
  torsion_idx: np.ndarray
  torsion_n: np.ndarray
  torsion_phase: np.ndarray
  torsion_k: np.ndarray
  charge: np.ndarray
  sigma: np.ndarray
  epsilon: np.ndarray
  exception_idx: np.ndarray
  exception_qq: np.ndarray
  exception_sigma: np.ndarray
  exception_epsilon: np.ndarray
  gbsa: Optional[GBSAParams]


def create_openmm_system(pdb_path: str,
                         forcefield_files: Sequence[str] = DEFAULT_FORCEFIELD_FILES):
  """Builds the OpenMM system of a PDB: no cutoff, no constraints, flexible water.

  Args:
    pdb_path: path of a PDB file whose residues the force field can match (hydrogens present).
    forcefield_files: OpenMM force-field XML files (built-in names or paths).

  Returns:
    ``(system, topology, positions)`` with positions ``[n_atoms, 3]`` in nm (NumPy).
  """
  from openmm import app, unit  # pylint: disable=g-import-not-at-top

  pdb = app.PDBFile(pdb_path)
  forcefield = app.ForceField(*forcefield_files)
  system = forcefield.createSystem(
    pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False,
    removeCMMotion=False)
  positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
  return system, pdb.topology, positions


def params_from_system(system) -> ForceFieldParams:
  """Reads the parameters of an OpenMM ``System`` into arrays.

  Args:
    system: an ``openmm.System`` without periodic boxes, constraints or virtual sites.

  Returns:
    The ``ForceFieldParams`` of the system.

  Raises:
    ValueError: on unsupported forces, cutoffs, constraints or virtual sites.
  """
  import openmm  # pylint: disable=g-import-not-at-top
  from openmm import unit  # pylint: disable=g-import-not-at-top

  n = system.getNumParticles()
  if system.getNumConstraints():
    raise ValueError("systems with constraints are not supported (build with constraints=None)")
  if any(system.isVirtualSite(i) for i in range(n)):
    raise ValueError("virtual sites are not supported")
  masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])

  bonds, angles, torsions, nonbonded, gbsa = [], [], [], None, None
  for force in system.getForces():
    if isinstance(force, openmm.HarmonicBondForce):
      for i in range(force.getNumBonds()):
        a, b, r0, k = force.getBondParameters(i)
        bonds.append((a, b, r0.value_in_unit(unit.nanometer),
                      k.value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2)))
    elif isinstance(force, openmm.HarmonicAngleForce):
      for i in range(force.getNumAngles()):
        a, b, c, t0, k = force.getAngleParameters(i)
        angles.append((a, b, c, t0.value_in_unit(unit.radian),
                       k.value_in_unit(unit.kilojoule_per_mole / unit.radian**2)))
    elif isinstance(force, openmm.PeriodicTorsionForce):
      for i in range(force.getNumTorsions()):
        a, b, c, d, per, phase, k = force.getTorsionParameters(i)
        torsions.append((a, b, c, d, per, phase.value_in_unit(unit.radian),
                         k.value_in_unit(unit.kilojoule_per_mole)))
    elif isinstance(force, openmm.NonbondedForce):
      if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
        raise ValueError("only NonbondedForce.NoCutoff is supported")
      nonbonded = force
    elif isinstance(force, openmm.GBSAOBCForce):
      if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
        raise ValueError("only GBSAOBCForce.NoCutoff is supported")
      gbsa = force
    elif isinstance(force, openmm.CMMotionRemover):
      continue
    else:
      raise ValueError(f"unsupported force {type(force).__name__}")
  if nonbonded is None:
    raise ValueError("the system has no NonbondedForce")

  charge, sigma, epsilon = np.zeros(n), np.zeros(n), np.zeros(n)
  for i in range(n):
    q, s, e = nonbonded.getParticleParameters(i)
    charge[i] = q.value_in_unit(unit.elementary_charge)
    sigma[i] = s.value_in_unit(unit.nanometer)
    epsilon[i] = e.value_in_unit(unit.kilojoule_per_mole)
  exceptions = []
  for i in range(nonbonded.getNumExceptions()):
    a, b, qq, s, e = nonbonded.getExceptionParameters(i)
    exceptions.append((a, b, qq.value_in_unit(unit.elementary_charge**2),
                       s.value_in_unit(unit.nanometer), e.value_in_unit(unit.kilojoule_per_mole)))

  gbsa_params = None
  if gbsa is not None:
    gq, gr, gs = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
      q, r, s = gbsa.getParticleParameters(i)
      gq[i] = q.value_in_unit(unit.elementary_charge)
      gr[i] = r.value_in_unit(unit.nanometer)
      gs[i] = s
    gbsa_params = GBSAParams(
      charge=gq, radius=gr, scale=gs,
      solute_dielectric=float(gbsa.getSoluteDielectric()),
      solvent_dielectric=float(gbsa.getSolventDielectric()),
      surface_area_energy=float(gbsa.getSurfaceAreaEnergy().value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer**2)))

  def cols(rows, n_int, n_float, width):
    if not rows:
      return (np.zeros((0, width), np.int32),) + tuple(np.zeros(0) for _ in range(n_float))
    arr = list(zip(*rows))
    idx = np.stack([np.asarray(arr[j], np.int32) for j in range(n_int)], axis=1)
    return (idx,) + tuple(np.asarray(arr[j], np.float64) for j in range(n_int, n_int + n_float))

  bond_idx, bond_r0, bond_k = cols(bonds, 2, 2, 2)
  angle_idx, angle_t0, angle_k = cols(angles, 3, 2, 3)
  tors_idx, tors_n, tors_phase, tors_k = cols(torsions, 4, 3, 4)
  exc_idx, exc_qq, exc_s, exc_e = cols(exceptions, 2, 3, 2)
  return ForceFieldParams(
    n_atoms=n, masses=masses,
    bond_idx=bond_idx, bond_r0=bond_r0, bond_k=bond_k,
    angle_idx=angle_idx, angle_theta0=angle_t0, angle_k=angle_k,
    torsion_idx=tors_idx, torsion_n=tors_n, torsion_phase=tors_phase, torsion_k=tors_k,
    charge=charge, sigma=sigma, epsilon=epsilon,
    exception_idx=exc_idx, exception_qq=exc_qq, exception_sigma=exc_s,
    exception_epsilon=exc_e, gbsa=gbsa_params)
