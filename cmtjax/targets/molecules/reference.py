"""Reference sets of the molecular targets: equilibrium samples written to and read from files.

A reference set is an ``.npz``: positions [n, 3 n_atoms] float32 nm, potential energies
(kJ/mol), the independent-walker (block) label of each frame, the temperature (K), the protocol
that made it as a JSON string, and a format version. ``save_reference`` writes one;
``load_reference_set`` (and ``load_reference``, its positions) finds one: an explicit path, else
``$CMTJAX_DATA/reference/<name>.npz`` (``CMTJAX_DATA`` defaults to ``<repo>/data``), else the
small set shipped in this package (``data/<name>_reference.npz``). A missing set's error names
the command that generates it (``GENERATE_COMMAND``).

The samples come from replica-exchange Langevin MD, ``cmtjax.sampling.replica_exchange``;
alanine-dipeptide basin populations of a set are in ``cmtjax.metrics.basins``. Their names
(``replica_exchange``, ``aldp_basin_populations``, ...) are still readable from this module,
imported on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import NamedTuple

import numpy as np

from cmtjax._lazy import lazy_exports
from cmtjax.targets.molecules.systems import DATA_DIR, MOLECULAR_SYSTEMS

FORMAT_VERSION = 1
GENERATE_COMMAND = "cmtjax reference --target {name}"

# Names that moved to their own modules, for callers of this module. Imported when first read:
# cmtjax.sampling.replica_exchange imports cmtjax.targets.molecules, whose __init__ imports this
# module, so importing them here would be a cycle.
_MOVED = {
  **{n: "cmtjax.sampling.replica_exchange" for n in (
    "ReplicaExchange", "ReplicaExchangeFrames", "ReplicaExchangeResult", "ReplicaExchangeState",
    "SwapResult", "make_replica_exchange", "replica_exchange", "swap_neighbours")},
  **{n: "cmtjax.metrics.basins" for n in (
    "ALDP_BASINS", "aldp_basin_populations", "aldp_basin_populations_by_block")},
}
__getattr__, __dir__ = lazy_exports(__name__, _MOVED)


class ReferenceSet(NamedTuple):
  """Reference samples of a molecule read from an ``.npz``.

  A compact set (``save_reference(..., all_angles=...)``) keeps full coordinates only for a
  decorrelated subset of the frames, and the backbone dihedrals and energies of every frame:
  the Ramachandran and energy figures use all frames, EUBO / NLL / forward ESS the subset.

  Attributes:
    name: system name.
    positions: [n, 3 n_atoms] float32 nm (a compact set: the subset).
    energies: [n] float32 kJ/mol of ``positions``.
    walker: [n] int32 independent-walker (block) label of each frame.
    temperature: K.
    protocol: dict (how the samples were made).
    path: the file read.
    all_angles: compact sets: [N, n_pairs, 2] float32 backbone (φ, ψ) of every frame, else None.
    all_energies: compact sets: [N] float32 kJ/mol of every frame, else None.
    all_walker: compact sets: [N] int32 walker of every frame, else None.
  """
  name: str
  positions: np.ndarray
  energies: np.ndarray
  walker: np.ndarray
  temperature: float
  protocol: dict
  path: str
  all_angles: np.ndarray | None = None
  all_energies: np.ndarray | None = None
  all_walker: np.ndarray | None = None


def data_root() -> str:
  """``$CMTJAX_DATA``, or ``<repo>/data`` (next to the ``cmtjax`` package) if unset."""
  env = os.environ.get("CMTJAX_DATA")
  if env:
    return os.path.abspath(os.path.expanduser(env))
  package = os.path.dirname(os.path.dirname(os.path.dirname(DATA_DIR)))  # .../cmtjax
  return os.path.join(os.path.dirname(package), "data")


def shipped_molecule(target) -> str | None:
  """The shipped molecule a molecular target is (its name, when built from the shipped PDB),
  else None (a user's file, even one named ``aldp.pdb``)."""
  spec = target.molecule
  if spec is None or target.name not in MOLECULAR_SYSTEMS:
    return None
  shipped_pdb = os.path.join(DATA_DIR, MOLECULAR_SYSTEMS[target.name][0])
  return target.name if os.path.abspath(spec.pdb_path) == os.path.abspath(shipped_pdb) else None


def reference_key(target) -> str:
  """The name a molecular target's reference set is cached under: the shipped molecule's name
  with the default force field at 300 K; otherwise the name plus what differs (a user's PDB:
  a hash of the file; other force-field files: a hash of their names; another temperature)."""
  from cmtjax.targets.molecules.parameters import DEFAULT_FORCEFIELD_FILES
  info = target.info
  key = target.name
  if shipped_molecule(target) is None:
    with open(target.molecule.pdb_path, "rb") as f:
      key += "_" + hashlib.sha256(f.read()).hexdigest()[:8]
  files = list(info.get("forcefield_files", DEFAULT_FORCEFIELD_FILES))
  if files != list(DEFAULT_FORCEFIELD_FILES):
    key += "_ff" + hashlib.sha256(",".join(files).encode()).hexdigest()[:8]
  if float(info.get("temperature", 300.0)) != 300.0:
    key += f"_{float(info['temperature']):g}K"
  return key


def reference_mismatch(found: "ReferenceSet", target) -> str | None:
  """Why a reference set does not belong to a target (force field, temperature), or None."""
  info, protocol = target.info, found.protocol
  if abs(found.temperature - float(info.get("temperature", found.temperature))) > 1e-6:
    return (f"the reference was sampled at {found.temperature:g} K, the target is at "
            f"{float(info['temperature']):g} K")
  files = protocol.get("forcefield_files")
  if files is not None and list(files) != list(info.get("forcefield_files", files)):
    return (f"the reference was made with the force field {list(files)}, the target uses "
            f"{list(info['forcefield_files'])}")
  return None


def cached_reference_path(name: str) -> str:
  """``$CMTJAX_DATA/reference/<name>.npz``."""
  return os.path.join(data_root(), "reference", f"{name}.npz")


def shipped_reference_path(name: str) -> str:
  """The small set shipped in the package: ``targets/molecules/data/<name>_reference.npz``."""
  return os.path.join(DATA_DIR, f"{name}_reference.npz")


def save_reference(path: str, *, name: str, positions, energies, walker, temperature: float,
                   protocol: dict, all_angles=None, all_energies=None, all_walker=None) -> str:
  """Writes a reference set (float32 positions) to ``path`` (.npz, compressed).

  Args:
    path: output file (parent folders are created).
    name: system name.
    positions: [n, 3 n_atoms] nm.
    energies: [n] kJ/mol.
    walker: [n] int block labels.
    temperature: K.
    protocol: JSON-serialisable dict.
    all_angles, all_energies, all_walker: a compact set's backbone (φ, ψ) [N, n_pairs, 2],
      energies [N] and walkers [N] of every frame (``positions`` then holds a subset).

  Returns:
    The path written.
  """
  positions = np.asarray(positions, np.float32)
  n = positions.shape[0]
  energies = np.asarray(energies, np.float32).reshape(-1)
  walker = np.asarray(walker, np.int32).reshape(-1)
  if positions.ndim != 2 or positions.shape[1] % 3 or energies.shape != (n,) or (
      walker.shape != (n,)):
    raise ValueError(f"shapes: positions {positions.shape}, energies {energies.shape}, "
                     f"walker {walker.shape}; need [n, 3 n_atoms], [n], [n]")
  extra = {}
  if all_angles is not None:
    all_angles = np.asarray(all_angles, np.float32)
    big = all_angles.shape[0]
    all_energies = np.asarray(all_energies, np.float32).reshape(-1)
    all_walker = np.asarray(all_walker, np.int32).reshape(-1)
    if all_angles.ndim != 3 or all_angles.shape[2] != 2 or all_energies.shape != (big,) or (
        all_walker.shape != (big,)):
      raise ValueError(f"shapes: all_angles {all_angles.shape}, all_energies "
                       f"{all_energies.shape}, all_walker {all_walker.shape}; need "
                       f"[N, n_pairs, 2], [N], [N]")
    extra = dict(all_angles=all_angles, all_energies=all_energies, all_walker=all_walker)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez_compressed(path, positions=positions, energies=energies, walker=walker,
                      temperature=np.float64(temperature), name=np.str_(name),
                      n_atoms=np.int32(positions.shape[1] // 3),
                      protocol=np.str_(json.dumps(protocol, sort_keys=True)),
                      format_version=np.int32(FORMAT_VERSION), **extra)
  return path


def load_reference_set(name: str, path: str | None = None, *,
                       n_atoms: int | None = None, spec: str | None = None) -> ReferenceSet:
  """Reads a molecule's reference samples.

  Looks in order at ``path`` (if given), ``$CMTJAX_DATA/reference/<name>.npz`` and, for a
  shipped molecule, the small set shipped with the package.

  Args:
    name: system name ("aldp", ... or the stem of a user's PDB file).
    path: an explicit ``.npz`` file.
    n_atoms: the molecule's atom count (default: the shipped molecule's; unchecked for
      other molecules when not given).
    spec: the target spec named in the "generate it with" hint (default ``name``).

  Returns:
    The ``ReferenceSet``.

  Raises:
    ValueError: the file's atom count or format does not match.
    FileNotFoundError: no file (the message names the command that generates one).
  """
  command = GENERATE_COMMAND.format(name=spec or name)
  if n_atoms is None and name in MOLECULAR_SYSTEMS:
    n_atoms = MOLECULAR_SYSTEMS[name][1]
  if path is not None:
    if not os.path.exists(path):
      raise FileNotFoundError(f"reference file {path!r} for {name!r} does not exist; generate "
                              f"it with `{command} --out {path}`")
    chosen = path
  else:
    candidates = [cached_reference_path(name)]
    if name in MOLECULAR_SYSTEMS:
      candidates.append(shipped_reference_path(name))
    chosen = next((c for c in candidates if os.path.exists(c)), None)
    if chosen is None:
      raise FileNotFoundError(
        f"no reference samples for {name!r}: looked at {' and '.join(candidates)}. Generate "
        f"them with `{command}` (writes {candidates[0]}).")
  with np.load(chosen, allow_pickle=False) as f:
    missing = {"positions", "energies", "temperature", "protocol", "format_version"} - set(
      f.files)
    if missing:
      raise ValueError(f"{chosen}: not a reference file (missing {sorted(missing)})")
    version = int(f["format_version"])
    if version != FORMAT_VERSION:
      raise ValueError(f"{chosen}: format version {version}, this cmtjax reads {FORMAT_VERSION}")
    positions = np.asarray(f["positions"], np.float32)
    if positions.ndim != 2 or positions.shape[1] % 3 or (
        n_atoms is not None and positions.shape[1] != 3 * n_atoms):
      expected = "3 n_atoms" if n_atoms is None else 3 * n_atoms
      raise ValueError(f"{chosen}: positions have shape {positions.shape}, but {name!r} has "
                       f"{n_atoms} atoms (expected [n, {expected}]); wrong system's file?")
    walker = (np.asarray(f["walker"], np.int32) if "walker" in f.files
              else np.zeros(positions.shape[0], np.int32))
    compact = {k: np.asarray(f[k]) for k in ("all_angles", "all_energies", "all_walker")
               if k in f.files}
    return ReferenceSet(name=name, positions=positions,
                        energies=np.asarray(f["energies"], np.float32), walker=walker,
                        temperature=float(f["temperature"]),
                        protocol=json.loads(str(f["protocol"])), path=os.path.abspath(chosen),
                        **compact)


def load_target_reference(target, path: str | None = None) -> ReferenceSet:
  """The reference set of a molecular target: ``path``, else the set cached or shipped under
  :func:`reference_key` (``load_reference_set`` with the molecule's atom count, and the target
  spec its "generate it with" hint names).

  Raises:
    FileNotFoundError, ValueError: as :func:`load_reference_set`. Whether the set belongs to
      the target's force field and temperature is the caller's check
      (:func:`reference_mismatch`).
  """
  spec = target.molecule
  return load_reference_set(reference_key(target), path, n_atoms=spec.topology.n_atoms,
                            spec=shipped_molecule(target) or spec.pdb_path)


def load_reference(name: str, path: str | None = None, **kwargs) -> np.ndarray:
  """Reference positions of a molecule: [n, 3 n_atoms] float32 nm (see ``load_reference_set``)."""
  return load_reference_set(name, path, **kwargs).positions
