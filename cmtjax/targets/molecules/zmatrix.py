"""A Z-matrix built automatically from a molecule's bond graph.

Every atom after the first three is placed from three earlier atoms (j, k, l) by a bond length
|x_i - x_j|, a bond angle (i, j, k) and a dihedral (i, j, k, l). The first three atoms fix the
global frame: atom 0 at the origin, atom 1 on the x axis (one bond length), atom 2 in the xy
plane (a bond length and an angle). That leaves 3N - 6 internal coordinates: N - 1 bonds,
N - 2 angles and N - 3 dihedrals.

How the references are chosen (placement order is a breadth-first walk of the bond graph from its
centre, heavy atoms before hydrogens):

* j is the atom's parent in the walk (bonded to it), k is j's parent (or, at the root, the
  second frame atom), so (i, j, k) is a real bond angle.
* The first child of j placed with a given (j, k) gets a *free* dihedral about the j-k bond,
  with l a placed neighbour of k: a rotatable torsion (phi, psi, side chains, methyl groups),
  periodic, modelled on the whole circle.
* Every later child of j with the same (j, k) gets an *offset* dihedral (i, j, k, s) relative to
  that first sibling s: the angle between two substituents of one centre seen along j-k, about
  ±120° at an sp3 centre and 180° at an sp2 centre. Offsets are stiff, so they are modelled on a
  bounded interval around their value in the reference structure, which also fixes the
  handedness of every stereocentre whose substituents are placed this way (the C-alpha atoms:
  C-beta and H-alpha are offsets from C, and never cross the plane).

Atoms are grouped into levels whose references are all placed in earlier levels, so the
Cartesian reconstruction is a handful of vectorised steps rather than one per atom.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from cmtjax.targets.molecules.topology import MolecularTopology, dihedral_from_points

FREE, OFFSET = 0, 1


@dataclasses.dataclass(frozen=True)
class ZMatrix:
  """References and reference values of a Z-matrix (all NumPy; indices are atom indices).

  The internal-coordinate vector has the layout [bonds (N-1), angles (N-2), dihedrals (N-3)],
  each block ordered by placement.

  Attributes:
    n_atoms: N.
    order: [N] placement order; order[:3] are the frame atoms.
    bond_atom, bond_ref: [N-1] atom i and j of every bond coordinate (order[1:]).
    angle_atom, angle_ref: [N-2] atom i and [N-2, 2] atoms (j, k) of every angle (order[2:]).
    torsion_atom, torsion_ref: [N-3] atom i and [N-3, 3] atoms (j, k, l) of every dihedral
      (order[3:]).
    torsion_kind: [N-3] ``FREE`` (periodic) or ``OFFSET`` (bounded, relative to a sibling).
    tetrahedral: [N-3] bool, True where atom j has four bonded neighbours: an offset there
      decides on which side of the plane (i, j, k) the atom sits, i.e. the handedness of j.
    levels: tuple of [n_level] arrays of positions in ``order[3:]`` (0-based into the dihedral
      block) that can be placed together.
    bonds0, angles0, torsions0: the internal coordinates of the structure the Z-matrix was
      built on (nm, rad, rad).
  """
  n_atoms: int
  order: np.ndarray
  bond_atom: np.ndarray
  bond_ref: np.ndarray
  angle_atom: np.ndarray
  angle_ref: np.ndarray
  torsion_atom: np.ndarray
  torsion_ref: np.ndarray
  torsion_kind: np.ndarray
  tetrahedral: np.ndarray
  levels: tuple
  bonds0: np.ndarray
  angles0: np.ndarray
  torsions0: np.ndarray

  @property
  def dim(self) -> int:
    """3N - 6."""
    return 3 * self.n_atoms - 6

  @property
  def n_free_torsions(self) -> int:
    return int(np.sum(self.torsion_kind == FREE))

  def describe(self, top: MolecularTopology) -> list[str]:
    """Human-readable lines "i: j k l (kind)" with atom names, in placement order."""
    def name(a):
      return f"{top.residue_names[a]}{top.residue_index[a]}:{top.atom_names[a]}"
    lines = [f"frame: {', '.join(name(a) for a in self.order[:3])}"]
    for t in range(self.n_atoms - 3):
      j, k, l = self.torsion_ref[t]
      kind = "free" if self.torsion_kind[t] == FREE else "offset"
      lines.append(f"{name(self.torsion_atom[t])}: {name(j)} {name(k)} {name(l)} ({kind})")
    return lines


def _graph_centre(nb: list[list[int]], heavy: np.ndarray) -> int:
  """The heavy atom whose largest bond-graph distance to any atom is smallest."""
  n = len(nb)
  best, best_ecc = -1, None
  for s in range(n):
    if not heavy[s] or sum(heavy[t] for t in nb[s]) < 2:
      continue
    dist = np.full(n, -1)
    dist[s] = 0
    queue = collections.deque([s])
    while queue:
      u = queue.popleft()
      for v in nb[u]:
        if dist[v] < 0:
          dist[v] = dist[u] + 1
          queue.append(v)
    if np.any(dist < 0):
      raise ValueError("the bond graph is not connected: a Z-matrix needs one molecule")
    ecc = int(dist.max())
    if best_ecc is None or ecc < best_ecc:
      best, best_ecc = s, ecc
  if best < 0:
    raise ValueError("no heavy atom with two heavy neighbours to root the Z-matrix at")
  return best


def _angle(a, b, c) -> float:
  u, v = a - b, c - b
  return float(np.arccos(np.clip(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1)))


def build_zmatrix(top: MolecularTopology, positions: np.ndarray) -> ZMatrix:
  """Builds the Z-matrix of a molecule and its internal coordinates at ``positions``.

  Args:
    top: the topology (atoms and bonds; one connected molecule, N >= 4).
    positions: [N, 3] reference structure in nm (e.g. the energy minimum).

  Returns:
    The ``ZMatrix``.

  Raises:
    ValueError: a disconnected bond graph, too few atoms, or a degenerate reference structure
      (collinear reference atoms).
  """
  n = top.n_atoms
  if n < 4:
    raise ValueError(f"a Z-matrix needs at least 4 atoms, got {n}")
  positions = np.asarray(positions, np.float64).reshape(n, 3)
  nb = top.neighbours()
  heavy = np.asarray([e != "H" for e in top.elements])
  root = _graph_centre(nb, heavy)

  def children_order(u):  # heavy atoms first, then by index
    return sorted(nb[u], key=lambda v: (not heavy[v], v))

  parent = {root: -1}
  order = [root]
  queue = collections.deque([root])
  while queue:
    u = queue.popleft()
    for v in children_order(u):
      if v not in parent:
        parent[v] = u
        order.append(v)
        queue.append(v)
  if len(order) != n:
    raise ValueError("the bond graph is not connected: a Z-matrix needs one molecule")
  placed_at = {a: t for t, a in enumerate(order)}
  a0, a1, a2 = order[:3]
  if parent[a2] not in (a0, a1):
    raise ValueError("internal error: the third frame atom is not bonded to the first two")

  # Frame: atom 1 is bonded to atom 0; atom 2 is bonded to its parent (0 or 1) and its angle is
  # taken against the other frame atom. Atom 2 is the first substituent of p2 seen along p2-q2,
  # so later substituents of p2 get offsets from it.
  p2 = parent[a2]
  q2 = a1 if p2 == a0 else a0
  torsion_atom, torsion_ref, torsion_kind = [], [], []
  first_sibling: dict[tuple[int, int], int] = {(p2, q2): a2}
  for i in order[3:]:
    j = parent[i]
    if j == root:  # a child of the root: its angle is taken against the second frame atom
      k = a1
    else:
      k = parent[j]
    key = (j, k)
    if key in first_sibling:
      l, kind = first_sibling[key], OFFSET
    else:
      cand = [v for v in nb[k] if v != j and placed_at[v] < placed_at[i]]
      if not cand:  # k has no other placed neighbour: use the first-placed other frame atom
        cand = [v for v in order[:placed_at[i]] if v not in (i, j, k)]
      cand.sort(key=lambda v: (not heavy[v], placed_at[v]))
      l, kind = cand[0], FREE
      first_sibling[key] = i
    torsion_atom.append(i)
    torsion_ref.append((j, k, l))
    torsion_kind.append(kind)

  bond_atom = np.asarray(order[1:], np.int32)
  bond_ref = np.asarray([a0, p2] + [r[0] for r in torsion_ref], np.int32)
  angle_atom = np.asarray(order[2:], np.int32)
  angle_ref = np.asarray([(p2, q2)] + [(r[0], r[1]) for r in torsion_ref], np.int32)
  torsion_atom = np.asarray(torsion_atom, np.int32)
  torsion_ref = np.asarray(torsion_ref, np.int32).reshape(-1, 3)
  torsion_kind = np.asarray(torsion_kind, np.int32)

  # Levels: an atom can be placed once its three references are.
  depth = {a0: 0, a1: 0, a2: 0}
  for t, i in enumerate(torsion_atom):
    depth[int(i)] = 1 + max(depth[int(r)] for r in torsion_ref[t])
  t_depth = np.asarray([depth[int(i)] for i in torsion_atom])
  levels = tuple(np.nonzero(t_depth == d)[0].astype(np.int32)
                 for d in range(1, int(t_depth.max()) + 1))

  X = positions
  bonds0 = np.linalg.norm(X[bond_atom] - X[bond_ref], axis=-1)
  angles0 = np.asarray([_angle(X[i], X[j], X[k]) for i, (j, k) in zip(angle_atom, angle_ref)])
  torsions0 = np.asarray(dihedral_from_points(X[torsion_atom], *(X[torsion_ref[:, m]]
                                                                  for m in range(3))))
  if np.any(angles0 < 1e-3) or np.any(angles0 > np.pi - 1e-3):
    raise ValueError("the reference structure has a (near-)linear bond angle; a Z-matrix "
                     "dihedral would be undefined there")
  return ZMatrix(n_atoms=n, order=np.asarray(order, np.int32), bond_atom=bond_atom,
                 bond_ref=bond_ref, angle_atom=angle_atom, angle_ref=angle_ref,
                 torsion_atom=torsion_atom, torsion_ref=torsion_ref, torsion_kind=torsion_kind,
                 tetrahedral=np.asarray([len(nb[int(j)]) == 4 for j in torsion_ref[:, 0]]),
                 levels=levels, bonds0=bonds0, angles0=angles0, torsions0=torsions0)
