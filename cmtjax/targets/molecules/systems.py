"""Molecular targets: Boltzmann densities exp(-E(x) / k_B T) on Cartesian positions in nm.

``make_molecular_system`` turns any PDB (hydrogens present) plus OpenMM force-field files into a
``MolecularSystem`` of pure, batched JAX functions; ``make_molecular_target`` does so for the
shipped systems of the paper:

  =======  ====================================  =======
  name     molecule                              atoms
  =======  ====================================  =======
  aldp     Ace-Ala-Nme (alanine dipeptide)       22
  ala4     Ace-(Ala)3-Nme                        42
  ala6     Ace-(Ala)5-Nme                        62
  elil     zwitterionic Glu-Leu-Ile-Leu          75
  =======  ====================================  =======

Their energy-minimised structures live in ``data/`` and were built offline by
``experiments/molecules/build_structures.py``. Force field: AMBER99SB-ILDN with OBC implicit
solvent, no cutoff, no constraints.

Log densities live in Cartesian space: ``x: [batch, 3 * n_atoms]`` is the flattened positions
(atom-major: x, y, z of atom 0, then atom 1, ...) in nm.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.targets.base import Target
from cmtjax.targets.molecules import parameters as _parameters
from cmtjax.targets.molecules.energy import EnergyFns, check_precision_available, make_energy_fn
from cmtjax.targets.molecules.regularise import (DEFAULT_ENERGY_CAP,
                                                 DEFAULT_ENERGY_LOG_THRESHOLD, EnergyInfo,
                                                 regularise_energy)
from cmtjax.targets.molecules.topology import (MolecularTopology, backbone_dihedral_pairs,
                                               chiral_centres, chirality_signs, load_topology)
from cmtjax.targets.molecules.zmatrix import ZMatrix, build_zmatrix

Array = jax.Array

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

MOLECULAR_SYSTEMS = {
  "aldp": ("aldp.pdb", 22, "Ace-Ala-Nme (alanine dipeptide)"),
  "ala4": ("ala4.pdb", 42, "Ace-(Ala)3-Nme"),
  "ala6": ("ala6.pdb", 62, "Ace-(Ala)5-Nme"),
  "elil": ("elil.pdb", 75, "zwitterionic Glu-Leu-Ile-Leu"),
}

_PRECISIONS = {"float32": jnp.float32, "float64": jnp.float64}

# Pair arrays are [n_atoms, n_atoms, chunk]; keeping one of them near 2 MB (float32) keeps the
# working set of the force evaluation in cache. Larger chunks were up to 5x slower per
# configuration on CPU for the 75-atom system.
_CHUNK_ELEMENTS = 2**19


def default_chunk_size(n_atoms: int, precision: str = "float32") -> int:
  """Largest power of two with n_atoms^2 * chunk <= 2^19 (2^18 for float64), at least 8."""
  budget = _CHUNK_ELEMENTS // (2 if precision == "float64" else 1)
  return max(8, 2 ** int(np.floor(np.log2(max(1.0, budget / n_atoms**2)))))


def _map_chunks(fn: Callable, R: Array, chunk: int):
  """Applies a batched ``fn`` to ``R: [batch, ...]`` in chunks of ``chunk`` rows (lax.map)."""
  batch = R.shape[0]
  if batch <= chunk:
    return fn(R)
  n_chunks = -(-batch // chunk)
  pad = n_chunks * chunk - batch
  if pad:
    R = jnp.concatenate([R, jnp.broadcast_to(R[:1], (pad,) + R.shape[1:])])
  out = jax.lax.map(fn, R.reshape((n_chunks, chunk) + R.shape[1:]))
  return jax.tree.map(lambda o: o.reshape((n_chunks * chunk,) + o.shape[2:])[:batch], out)


@dataclasses.dataclass(frozen=True)
class MoleculeSpec:
  """What flows and metrics need to know about a molecule (``Target.molecule``).

  Attributes:
    name: system name.
    pdb_path: topology / reference-structure file.
    topology: atoms and bonds.
    zmatrix: the Z-matrix built on the reference structure.
    positions: [n_atoms, 3] reference structure (nm).
    kbt: k_B T in kJ/mol.
    energy: ``x: [batch, 3 n_atoms] -> [batch]`` raw potential energy (kJ/mol).
    phi_idx, psi_idx: [n_pairs, 4] backbone dihedral atoms (``backbone_dihedral_pairs``).
    chiral_centres: [n_centres, 4] (CA, N, C, CB) of the C-alpha stereocentres.
    chirality: [n_centres] signs of the stereocentres in the reference structure.
  """
  name: str
  pdb_path: str
  topology: MolecularTopology
  zmatrix: ZMatrix
  positions: np.ndarray
  kbt: float
  energy: Callable[[Array], Array]
  phi_idx: np.ndarray
  psi_idx: np.ndarray
  chiral_centres: np.ndarray
  chirality: np.ndarray


@dataclasses.dataclass(frozen=True)
class MolecularSystem:
  """A molecule's force field as batched pure functions, and the target built on it.

  Attributes:
    name: system name.
    pdb_path: topology / reference-structure file.
    forcefield_files: OpenMM force-field files the parameters came from.
    n_atoms: number of atoms.
    temperature: K.
    kbt: k_B T in kJ/mol.
    precision: ``"float32"`` or ``"float64"`` (float64 needs x64 enabled at call time).
    params: the force-field arrays.
    positions: [n_atoms, 3] reference (energy-minimised, for shipped systems) positions in nm.
    masses: [n_atoms] atomic masses in Da.
    energy_fns: the energy functions on positions ``[n_atoms, 3]`` or ``[batch, n_atoms, 3]``.
    energy: ``x: [batch, 3 n_atoms] -> [batch]`` raw potential energy in kJ/mol.
    energy_and_forces: ``x: [batch, 3 n_atoms] -> ([batch], [batch, 3 n_atoms])``, kJ/mol and
      kJ/mol/nm.
    log_prob_with_info: ``x: [batch, 3 n_atoms] -> ([batch], EnergyInfo)``, the regularised
      reduced log density -E_reg / k_B T with diagnostics (non-finite count, ...). Its
      reverse-mode gradient is zero on rows whose energy or force is not finite (it is a
      ``custom_vjp``: first-order reverse mode only, no ``jax.jvp`` / Hessians).
    target: the ``Target`` (``log_prob`` = first output of ``log_prob_with_info``).
  """
  name: str
  pdb_path: str
  forcefield_files: tuple
  n_atoms: int
  temperature: float
  kbt: float
  precision: str
  params: _parameters.ForceFieldParams
  positions: np.ndarray
  masses: np.ndarray
  energy_fns: EnergyFns
  energy: Callable[[Array], Array]
  energy_and_forces: Callable[[Array], tuple]
  log_prob_with_info: Callable[[Array], tuple]
  target: Target


def make_molecular_system(
    pdb_path: str,
    forcefield_files: Sequence[str] = _parameters.DEFAULT_FORCEFIELD_FILES,
    *,
    name: str | None = None,
    temperature: float = 300.0,
    precision: str = "float32",
    energy_log_threshold: float = DEFAULT_ENERGY_LOG_THRESHOLD,
    energy_cap: float = DEFAULT_ENERGY_CAP,
    chunk_size: int | None = None,
) -> MolecularSystem:
  """Builds a molecular system from any PDB and OpenMM force-field files.

  OpenMM assigns the parameters once (no cutoff, no constraints); everything returned is JAX.

  Args:
    pdb_path: PDB file with all atoms (hydrogens included) that the force field can match.
    forcefield_files: OpenMM force-field XML files (built-in names or paths).
    name: name of the target (defaults to the file's stem).
    temperature: temperature in K.
    precision: ``"float32"`` (default) or ``"float64"``; float64 needs x64 enabled when the
      functions are called (``with jax.enable_x64(True):``).
    energy_log_threshold: energy (kJ/mol) above which energies grow logarithmically.
    energy_cap: largest regularised energy (kJ/mol); non-finite energies are mapped to it.
    chunk_size: batches larger than this are evaluated in sequential chunks of this many
      configurations (``jax.lax.map``), which bounds memory and keeps pair arrays in cache;
      default ``default_chunk_size(n_atoms, precision)``.

  Returns:
    A ``MolecularSystem``.
  """
  if precision not in _PRECISIONS:
    raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
  if temperature <= 0:
    raise ValueError(f"temperature must be positive, got {temperature}")
  dtype = _PRECISIONS[precision]
  pdb_path = os.path.abspath(pdb_path)
  name = name or os.path.splitext(os.path.basename(pdb_path))[0]
  system, _, positions = _parameters.create_openmm_system(pdb_path, forcefield_files)
  params = _parameters.params_from_system(system)
  n_atoms = params.n_atoms
  dim = 3 * n_atoms
  kbt = _parameters.MOLAR_GAS_CONSTANT * float(temperature)
  fns = make_energy_fn(params, dtype)
  chunk = int(chunk_size) if chunk_size else default_chunk_size(n_atoms, precision)

  def _positions(x: Array) -> Array:
    chex.assert_rank(x, 2)
    chex.assert_axis_dimension(x, 1, dim)
    check_precision_available(dtype)
    return jnp.asarray(x, dtype).reshape(x.shape[0], n_atoms, 3)

  @jax.jit
  def energy(x: Array) -> Array:
    return _map_chunks(fns.batch_energy, _positions(x), chunk)

  @jax.jit
  def energy_and_forces(x: Array) -> tuple[Array, Array]:
    e, f = _map_chunks(fns.batch_energy_and_forces, _positions(x), chunk)
    return e, f.reshape(x.shape[0], dim)

  @jax.custom_vjp
  def _guarded_energy(R: Array) -> Array:
    return _map_chunks(fns.batch_energy, R, chunk)

  def _guarded_energy_fwd(R: Array):
    e, f = _map_chunks(fns.batch_energy_and_forces, R, chunk)
    g = -f
    ok = jnp.logical_and(jnp.isfinite(e), jnp.all(jnp.isfinite(g), axis=(1, 2)))
    return e, jnp.where(ok[:, None, None], g, 0.0)

  def _guarded_energy_bwd(g: Array, cotangent: Array):
    return (cotangent[:, None, None] * g,)

  # Rows whose energy or gradient is not finite get a zero gradient, so one broken
  # configuration cannot turn the gradient of a whole batch (or of flow parameters) into NaN.
  _guarded_energy.defvjp(_guarded_energy_fwd, _guarded_energy_bwd)

  @jax.jit
  def log_prob_with_info(x: Array) -> tuple[Array, EnergyInfo]:
    e = _guarded_energy(_positions(x))
    e_reg, info = regularise_energy(e, energy_log_threshold, energy_cap)
    return -e_reg / jnp.asarray(kbt, dtype), info

  def log_prob(x: Array) -> Array:
    return log_prob_with_info(x)[0]

  info = {
    "n_atoms": n_atoms,
    "topology": pdb_path,
    "forcefield_files": list(forcefield_files),
    "temperature": float(temperature),
    "kbt": kbt,
    "precision": precision,
    "energy_log_threshold": float(energy_log_threshold),
    "energy_cap": float(energy_cap),
    "space": "cartesian, flattened [3 * n_atoms], nm",
    "energy_unit": "kJ/mol",
    "chunk_size": chunk,
  }
  topology = load_topology(pdb_path)
  if topology.n_atoms != n_atoms:
    raise RuntimeError(f"{pdb_path}: the topology has {topology.n_atoms} atoms, the force "
                       f"field {n_atoms}")
  phi_idx, psi_idx = backbone_dihedral_pairs(topology)
  centres = chiral_centres(topology)
  spec = MoleculeSpec(
      name=name, pdb_path=pdb_path, topology=topology,
      zmatrix=build_zmatrix(topology, positions), positions=np.asarray(positions),
      kbt=kbt, energy=energy, phi_idx=phi_idx, psi_idx=psi_idx, chiral_centres=centres,
      chirality=np.asarray(chirality_signs(np.asarray(positions).reshape(1, -1), centres))[0])
  target = Target(name=name, dim=dim, log_prob=log_prob, info=info, molecule=spec)
  return MolecularSystem(
    name=name, pdb_path=pdb_path, forcefield_files=tuple(forcefield_files), n_atoms=n_atoms,
    temperature=float(temperature), kbt=kbt, precision=precision, params=params,
    positions=positions, masses=params.masses, energy_fns=fns, energy=energy,
    energy_and_forces=energy_and_forces, log_prob_with_info=log_prob_with_info, target=target)


SYSTEM_KWARGS = ("forcefield_files", "temperature", "precision", "energy_log_threshold",
                  "energy_cap", "chunk_size")


def load_molecular_system(name: str, **kwargs) -> MolecularSystem:
  """The ``MolecularSystem`` of a shipped molecule ("aldp", "ala4", "ala6", "elil").

  Args:
    name: system name.
    **kwargs: forwarded to ``make_molecular_system`` (temperature, precision,
      energy_log_threshold, energy_cap, chunk_size, forcefield_files).

  Returns:
    A ``MolecularSystem``.

  Raises:
    ValueError: unknown name or keyword argument.
  """
  if name not in MOLECULAR_SYSTEMS:
    raise ValueError(f"unknown molecular system {name!r}; known: {sorted(MOLECULAR_SYSTEMS)}")
  unknown = sorted(set(kwargs) - set(SYSTEM_KWARGS))
  if unknown:
    raise ValueError(f"molecular target {name!r} got unknown keyword argument(s) "
                     f"{', '.join(map(repr, unknown))}; accepted: {', '.join(SYSTEM_KWARGS)}")
  filename, n_atoms, description = MOLECULAR_SYSTEMS[name]
  system = make_molecular_system(os.path.join(DATA_DIR, filename), name=name, **kwargs)
  if system.n_atoms != n_atoms:
    raise RuntimeError(f"{name}: expected {n_atoms} atoms, the PDB has {system.n_atoms}")
  system.target.info["description"] = description
  return system


def make_molecular_target(name: str, **kwargs) -> Target:
  """The ``Target`` of a shipped molecule; see ``load_molecular_system``.

  Args:
    name: "aldp", "ala4", "ala6" or "elil".
    **kwargs: temperature (K, default 300), precision ("float32" | "float64"),
      energy_log_threshold, energy_cap (kJ/mol), forcefield_files.

  Returns:
    A ``Target`` with ``log_prob(x: [batch, 3 n_atoms]) -> [batch]`` = -E_reg(x) / k_B T.
  """
  return load_molecular_system(name, **kwargs).target
