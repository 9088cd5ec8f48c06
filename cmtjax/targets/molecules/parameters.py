"""Force-field parameters read once from an OpenMM ``System`` into plain NumPy arrays.

The JAX energy (``energy.py``) never calls OpenMM: OpenMM is used only here, at construction
time, to assign AMBER parameters to a topology. Any PDB plus any force-field files that produce
the supported force classes work (:data:`SUPPORTED_FORCES`: HarmonicBondForce,
HarmonicAngleForce, PeriodicTorsionForce, NonbondedForce without cutoff, and optionally OBC
implicit solvent, either as a GBSAOBCForce (``amber99_obc.xml``) or as the CustomGBForce that
OpenMM's ``implicit/obc2.xml`` and ``implicit/obc1.xml`` create (e.g. with ``amber14-all.xml``)).

Units: nm, rad, kJ/mol, elementary charges.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple, Optional, Sequence

import numpy as np

# Coulomb constant 1 / (4 pi eps0) in kJ mol^-1 nm e^-2, the value OpenMM uses.
ONE_4PI_EPS0 = 138.93545764438198
# Molar gas constant in kJ mol^-1 K^-1 (k_B N_A).
MOLAR_GAS_CONSTANT = 8.31446261815324e-3

DEFAULT_FORCEFIELD_FILES = ("amber99sbildn.xml", "amber99_obc.xml")

SUPPORTED_FORCES = ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce",
                    "NonbondedForce (no cutoff)", "GBSAOBCForce (no cutoff)",
                    "CustomGBForce of implicit/obc2.xml or implicit/obc1.xml (no cutoff, "
                    "no salt)", "CMMotionRemover (ignored)")


class GBSAParams(NamedTuple):
  """OBC generalised-Born (GBSAOBCForce) parameters.

  Attributes:
    charge: [n_atoms] partial charges (e).
    radius: [n_atoms] atomic GB radii (nm).
    scale: [n_atoms] overlap scale factors (dimensionless).
    solute_dielectric: scalar.
    solvent_dielectric: scalar.
    surface_area_energy: ACE surface tension (kJ/mol/nm^2).
    offset: dielectric offset (nm): the Born integrals use rho - offset.
    alpha, beta, gamma: the OBC rescaling tanh(alpha psi - beta psi^2 + gamma psi^3)
      (OBC2: 1, 0.8, 4.85; OBC1: 0.8, 0, 2.909125).
    coulomb: the Coulomb constant of the force (GBSAOBCForce: ``ONE_4PI_EPS0``; the
      CustomGBForce expressions write 138.935485).
    engulfed_term: whether the Born integral adds 2 (1/o_i - l_ij) for an atom inside a
      neighbour's scaled sphere (GBSAOBCForce does, the CustomGBForce does not).
  """
  charge: np.ndarray
  radius: np.ndarray
  scale: np.ndarray
  solute_dielectric: float
  solvent_dielectric: float
  surface_area_energy: float
  offset: float = 0.009
  alpha: float = 1.0
  beta: float = 0.8
  gamma: float = 4.85
  coulomb: float = ONE_4PI_EPS0
  engulfed_term: bool = True


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


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


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

  if not os.path.isfile(pdb_path):
    raise FileNotFoundError(f"PDB file {pdb_path!r} does not exist")
  try:
    pdb = app.PDBFile(pdb_path)
  except Exception as e:  # OpenMM raises several types for unreadable files
    raise ValueError(f"{pdb_path}: not a readable PDB file ({type(e).__name__}: "
                     f"{_first_line(e)})") from None
  try:
    forcefield = app.ForceField(*forcefield_files)
  except (ValueError, OSError, FileNotFoundError) as e:
    raise ValueError(f"force-field files {list(forcefield_files)} could not be loaded: "
                     f"{_first_line(e)}") from None
  try:
    system = forcefield.createSystem(
      pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False,
      removeCMMotion=False)
  except ValueError as e:  # e.g. "No template found for residue 2 (XYZ). ..."
    raise ValueError(f"{os.path.basename(pdb_path)}: the force field "
                     f"({', '.join(forcefield_files)}) cannot parameterise it: "
                     f"{_first_line(e)}") from None
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
    elif isinstance(force, (openmm.GBSAOBCForce, openmm.CustomGBForce)):
      if gbsa is not None:
        raise ValueError("the system has two implicit-solvent forces")
      gbsa = force
    elif isinstance(force, openmm.CMMotionRemover):
      continue
    else:
      raise ValueError(f"unsupported force {type(force).__name__}; supported: "
                       f"{'; '.join(SUPPORTED_FORCES)}")
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
  if isinstance(gbsa, openmm.CustomGBForce):
    gbsa_params = _custom_gb_obc_params(gbsa, n)
  elif gbsa is not None:
    if gbsa.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
      raise ValueError("only GBSAOBCForce.NoCutoff is supported")
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


# The CustomGBForce that OpenMM's implicit/obc1.xml and obc2.xml build (with e.g.
# amber14-all.xml), written as patterns of its expressions with whitespace removed; NUM stands
# for a number that is read. Any other CustomGBForce (GBn, GBn2, HCT, salt, a cutoff) is refused.
_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_CUSTOM_GB_I = ("select(step(r+sr2-or1),0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))"
                "+0.5*log(L/U)/r),0);U=r+sr2;L=max(or1,D);D=abs(r-sr2)")
_CUSTOM_GB_B = [  # (pattern, how to read alpha, beta, gamma from the groups)
  (r"1/\(1/or-tanh\(psi-NUM\*psi\^2\+NUM\*psi\^3\)/radius\);psi=I\*or;"
   r"radius=or\+offset;offset=NUM", lambda g: (1.0, float(g[0]), float(g[1]), float(g[2]))),
  (r"1/\(1/or-tanh\(NUM\*psi\+NUM\*psi\^3\)/radius\);psi=I\*or;"
   r"radius=or\+offset;offset=NUM", lambda g: (float(g[0]), 0.0, float(g[1]), float(g[2]))),
]
_CUSTOM_GB_TAIL = r"solventDielectric=NUM;soluteDielectric=NUM;kappa=NUM;offset=NUM"
_CUSTOM_GB_SELF = r"-0\.5\*NUM\*\(1/soluteDielectric-1/solventDielectric\)\*charge\^2/B;"
_CUSTOM_GB_ACE = r"NUM\*\(radius\+0\.14\)\^2\*\(radius/B\)\^6;radius=or\+offset;"
_CUSTOM_GB_PAIR = (r"-NUM\*\(1/soluteDielectric-1/solventDielectric\)\*charge1\*charge2/f;"
                   r"f=sqrt\(r\^2\+B1\*B2\*exp\(-r\^2/\(4\*B1\*B2\)\)\);")


def _match(pattern: str, text: str):
  m = re.fullmatch(pattern.replace("NUM", _NUM), text)
  return None if m is None else m.groups()


def _custom_gb_obc_params(force, n: int) -> GBSAParams:
  """Reads the OBC CustomGBForce of ``implicit/obc2.xml`` / ``obc1.xml`` into GBSAParams.

  Raises:
    ValueError: any other CustomGBForce (naming what differs).
  """
  import openmm  # pylint: disable=g-import-not-at-top

  def refuse(what: str):
    raise ValueError(f"unsupported CustomGBForce ({what}); supported implicit solvent: "
                     "GBSAOBCForce or the OBC CustomGBForce of implicit/obc2.xml or "
                     "implicit/obc1.xml, without cutoff or salt")

  if force.getNonbondedMethod() != openmm.CustomGBForce.NoCutoff:
    refuse("a cutoff")
  names = [force.getPerParticleParameterName(i)
           for i in range(force.getNumPerParticleParameters())]
  if names != ["charge", "or", "sr"] or force.getNumGlobalParameters() or (
      force.getNumTabulatedFunctions() or force.getNumExclusions()):
    refuse(f"per-particle parameters {names}, "
           f"{force.getNumGlobalParameters()} global parameters, "
           f"{force.getNumTabulatedFunctions()} tabulated functions")
  compact = lambda e: "".join(e.split())  # noqa: E731
  values = [force.getComputedValueParameters(i) for i in range(force.getNumComputedValues())]
  if len(values) != 2 or values[0][0] != "I" or values[1][0] != "B":
    refuse(f"computed values {[v[0] for v in values]}, not I and B")
  if compact(values[0][1]) != _CUSTOM_GB_I:
    refuse("a Born integral I other than OBC's")
  obc = None
  for pattern, read in _CUSTOM_GB_B:
    groups = _match(pattern, compact(values[1][1]))
    if groups is not None:
      obc = read(groups)
  if obc is None:
    refuse("a Born radius B other than OBC's tanh form")
  alpha, beta, gamma, offset = obc
  terms = [compact(force.getEnergyTermParameters(i)[0])
           for i in range(force.getNumEnergyTerms())]
  coulomb, surface, tails = None, 0.0, []
  for term in terms:
    for pattern, kind in ((_CUSTOM_GB_SELF, "self"), (_CUSTOM_GB_ACE, "ace"),
                          (_CUSTOM_GB_PAIR, "pair")):
      groups = _match(pattern + _CUSTOM_GB_TAIL, term)
      if groups is None:
        continue
      head, tail = float(groups[0]), [float(g) for g in groups[1:]]
      tails.append(tail)
      if kind == "ace":
        surface = head
      elif coulomb is None or coulomb == head:
        coulomb = head
      else:
        refuse("two Coulomb constants")
      break
    else:
      refuse(f"energy term {term[:60]!r}...")
  if len(terms) not in (2, 3) or coulomb is None or any(t != tails[0] for t in tails):
    refuse("energy terms other than OBC's self, pair and optional ACE terms")
  solvent, solute, kappa, term_offset = tails[0]
  if kappa != 0.0:
    refuse(f"salt screening kappa = {kappa}")
  if abs(term_offset - offset) > 1e-12:
    refuse("two different dielectric offsets")
  charge, radius, scale = np.zeros(n), np.zeros(n), np.zeros(n)
  for i in range(n):
    q, offset_radius, scaled_radius = force.getParticleParameters(i)
    charge[i] = q
    radius[i] = offset_radius + offset
    scale[i] = scaled_radius / offset_radius
  return GBSAParams(charge=charge, radius=radius, scale=scale, solute_dielectric=solute,
                    solvent_dielectric=solvent, surface_area_energy=surface / (4.0 * np.pi),
                    offset=offset, alpha=alpha, beta=beta, gamma=gamma, coulomb=coulomb,
                    engulfed_term=False)
