"""What a molecule's topology says: atoms, bonds, backbone dihedrals, peptide bonds, chiral
centres.

Read once from a PDB (OpenMM's reader, which also adds the standard residue bonds), held as
plain NumPy arrays, so that everything downstream (internal coordinates, Ramachandran metrics,
chirality checks) works on index arrays in JAX.

Conventions: positions ``x: [batch, 3 * n_atoms]`` in nm (atom-major), angles in radians on
(-pi, pi] with the IUPAC sign of a dihedral.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MolecularTopology:
  """Atoms and bonds of a molecule.

  Attributes:
    n_atoms: number of atoms.
    atom_names: [n_atoms] PDB atom names ("CA", "HB1", ...).
    elements: [n_atoms] element symbols ("C", "H", ...).
    residue_names: [n_atoms] residue name of each atom ("ALA", "ACE", ...).
    residue_index: [n_atoms] 0-based residue index of each atom.
    bonds: [n_bonds, 2] atom indices (i < j), sorted.
  """
  n_atoms: int
  atom_names: tuple
  elements: tuple
  residue_names: tuple
  residue_index: np.ndarray
  bonds: np.ndarray

  def neighbours(self) -> list[list[int]]:
    """The bonded neighbours of every atom, each list sorted."""
    nb = [[] for _ in range(self.n_atoms)]
    for i, j in self.bonds:
      nb[int(i)].append(int(j))
      nb[int(j)].append(int(i))
    return [sorted(n) for n in nb]

  def find(self, residue: int, name: str) -> int | None:
    """Index of atom ``name`` in residue ``residue``, or None."""
    for i in range(self.n_atoms):
      if self.residue_index[i] == residue and self.atom_names[i] == name:
        return i
    return None

  @property
  def n_residues(self) -> int:
    return int(self.residue_index.max()) + 1 if self.n_atoms else 0


def load_topology(pdb_path: str) -> MolecularTopology:
  """Reads atoms and bonds from a PDB file (CONECT records and standard residue bonds).

  Args:
    pdb_path: path of the PDB file.

  Returns:
    The ``MolecularTopology``.

  Raises:
    FileNotFoundError: no such file.
  """
  from openmm import app  # the molecular extra; imported only here

  import os
  if not os.path.exists(pdb_path):
    raise FileNotFoundError(f"topology file {pdb_path!r} does not exist")
  top = app.PDBFile(pdb_path).topology
  atoms = list(top.atoms())
  residues = {r: k for k, r in enumerate(top.residues())}
  bonds = sorted({tuple(sorted((b[0].index, b[1].index))) for b in top.bonds()})
  return MolecularTopology(
      n_atoms=len(atoms),
      atom_names=tuple(a.name for a in atoms),
      elements=tuple(a.element.symbol if a.element is not None else "X" for a in atoms),
      residue_names=tuple(a.residue.name for a in atoms),
      residue_index=np.asarray([residues[a.residue] for a in atoms], np.int32),
      bonds=np.asarray(bonds, np.int32).reshape(-1, 2))


def backbone_dihedral_pairs(top: MolecularTopology) -> tuple[np.ndarray, np.ndarray]:
  """The (phi, psi) pairs of every residue that has both.

  phi_r = C(r-1)-N(r)-CA(r)-C(r), psi_r = N(r)-CA(r)-C(r)-N(r+1); caps (ACE, NME) count as
  neighbours, so alanine dipeptide has one pair and Ace-(Ala)_5-Nme five.

  Returns:
    ``(phi_idx, psi_idx)``, both [n_pairs, 4] atom indices.
  """
  phis, psis = [], []
  for r in range(top.n_residues):
    n, ca, c = top.find(r, "N"), top.find(r, "CA"), top.find(r, "C")
    c_prev = top.find(r - 1, "C") if r > 0 else None
    n_next = top.find(r + 1, "N") if r + 1 < top.n_residues else None
    if None in (n, ca, c, c_prev, n_next):
      continue
    phis.append((c_prev, n, ca, c))
    psis.append((n, ca, c, n_next))
  return np.asarray(phis, np.int32).reshape(-1, 4), np.asarray(psis, np.int32).reshape(-1, 4)


def peptide_bonds(top: MolecularTopology) -> np.ndarray:
  """The ω dihedral of every peptide bond C(r)-N(r+1): [n_bonds, 4] atom indices.

  ω = CA(r)-C(r)-N(r+1)-CA(r+1); a cap has no CA, so its carbon bonded to the peptide atom
  stands in (ACE's CH3, NME's methyl carbon). trans is ω ≈ 180°, cis ω ≈ 0°. Residue pairs
  without both C(r) and N(r+1) bonded to each other (e.g. two molecules) are skipped.
  """
  nb = top.neighbours()

  def carbon_beside(atom: int, other: int, residue: int) -> int | None:
    ca = top.find(residue, "CA")
    if ca is not None:
      return ca
    for j in nb[atom]:  # the cap's carbon: bonded to the peptide atom, not the other one
      if j != other and top.elements[j] == "C":
        return j
    return None

  rows = []
  for r in range(top.n_residues - 1):
    c, n = top.find(r, "C"), top.find(r + 1, "N")
    if c is None or n is None or n not in nb[c]:
      continue
    before, after = carbon_beside(c, n, r), carbon_beside(n, c, r + 1)
    if before is not None and after is not None:
      rows.append((before, c, n, after))
  return np.asarray(rows, np.int32).reshape(-1, 4)


def is_cis(omega):
  """A peptide bond is cis when its ω dihedral (radians) is within 90° of 0 (trans: 180°).
  Works on NumPy and JAX arrays alike."""
  return abs(omega) < 0.5 * np.pi


def chiral_centres(top: MolecularTopology) -> np.ndarray:
  """The C-alpha stereocentres: [n_centres, 4] indices (CA, N, C, CB) of non-glycine residues."""
  rows = []
  for r in range(top.n_residues):
    idx = [top.find(r, name) for name in ("CA", "N", "C", "CB")]
    if None not in idx:
      rows.append(idx)
  return np.asarray(rows, np.int32).reshape(-1, 4)


def _positions(x: Array) -> Array:
  x = jnp.asarray(x)
  return x.reshape(x.shape[0], -1, 3)


def dihedral_angles(x: Array, idx: np.ndarray) -> Array:
  """Dihedral angles a-b-c-d. x: [batch, 3 n_atoms]; idx: [m, 4] -> [batch, m] in (-pi, pi]."""
  R = _positions(x)
  return dihedral_from_points(*(R[:, idx[:, k]] for k in range(4)))


def wrap_angle(theta):
  """Maps angles (radians) onto (-π, π]: JAX arrays stay JAX (jit-safe), anything else becomes
  a NumPy float64 array (histograms of angles need the float64 bin edges to agree)."""
  if isinstance(theta, jax.Array):
    return jnp.pi - jnp.mod(jnp.pi - theta, 2.0 * jnp.pi)
  theta = np.asarray(theta, np.float64)
  return np.pi - np.mod(np.pi - theta, 2.0 * np.pi)


def dihedral_from_points(a: Array, b: Array, c: Array, d: Array) -> Array:
  """Dihedral a-b-c-d of points [..., 3] each -> [...] in (-pi, pi] (IUPAC sign).

  The one dihedral of cmtjax's coordinate code: NumPy inputs give a NumPy (float64) result,
  anything else a JAX array. (The force field evaluates the same formula on its
  structure-of-arrays layout, :func:`cmtjax.targets.molecules.energy.dihedral`, and a test
  holds the two together.)
  """
  xp = np if all(isinstance(v, np.ndarray) for v in (a, b, c, d)) else jnp
  b0, b1, b2 = b - a, c - b, d - c
  n1 = xp.cross(b0, b1)
  n2 = xp.cross(b1, b2)
  b1_hat = b1 / xp.linalg.norm(b1, axis=-1, keepdims=True)
  return xp.arctan2(xp.sum(xp.cross(n1, n2) * b1_hat, -1), xp.sum(n1 * n2, -1))


def chirality_signs(x: Array, centres: np.ndarray) -> Array:
  """Sign of the signed volume (N - CA) . ((C - CA) x (CB - CA)) per centre: [batch, n_centres]."""
  R = _positions(x)
  ca, n, c, cb = (R[:, centres[:, k]] for k in range(4))
  return jnp.sign(jnp.sum((n - ca) * jnp.cross(c - ca, cb - ca), -1))


def wrong_chirality(x: Array, centres: np.ndarray, reference_signs: Array) -> Array:
  """Whether any stereocentre of a configuration is mirrored. -> [batch] bool.

  Args:
    x: [batch, 3 n_atoms] positions.
    centres: [n_centres, 4] from ``chiral_centres``.
    reference_signs: [n_centres] ``chirality_signs`` of a correct (e.g. the reference) structure.
  """
  if centres.shape[0] == 0:
    return jnp.zeros((jnp.shape(x)[0],), bool)
  return jnp.any(chirality_signs(x, centres) != jnp.asarray(reference_signs)[None], axis=-1)
