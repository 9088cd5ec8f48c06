"""Internal coordinates as a bijector: scaled Z-matrix coordinates y <-> Cartesian positions x.

Spaces:
  * x: [batch, 3N] Cartesian positions in nm (atom-major), the space of the energy. The
    bijector's image is the canonical frame of the Z-matrix (atom order[0] at the origin,
    order[1] on the +x axis, order[2] in the xy plane with y > 0); densities on x are densities
    with respect to the 3N - 6 free Cartesian components of that frame (x of order[1], x and y
    of order[2], all three of every other atom). Energies are invariant under rigid motions, so
    a configuration in any frame is mapped to its canonical copy by ``to_internal``.
  * y: [batch, 3N - 6] scaled internal coordinates in [-1, 1], layout [bonds, angles,
    dihedrals] as in ``ZMatrix``:
      bond     b = b0 + bond_width * y
      angle    a = a0 + angle_width_i * y  (width shrunk where needed so that a stays in (0, pi))
      offset   t = wrap(t0 + offset_width_i * y)    (bounded: stiff dihedrals, stereocentres;
                                                    at a tetrahedral centre the width is
                                                    shrunk so that t never reaches 0 or pi,
                                                    which would mirror the centre)
      free     t = wrap(t0 + pi * y)                (periodic: y = -1 and y = 1 coincide)
    with the reference values b0, a0, t0 of the structure the Z-matrix was built on.

log |det dx/dy| = sum log(widths) + log b_2 + sum_{atoms >= 3} (2 log b_i + log sin a_i): the
Jacobian of placing each atom in spherical coordinates about its references.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.targets.molecules.topology import dihedral_from_points, wrap_angle
from cmtjax.targets.molecules.zmatrix import FREE, ZMatrix

Array = jax.Array

# Angles are kept this far (rad) from 0 and pi: a (near-)linear angle makes the dihedral of the
# next atom undefined and the Jacobian singular.
_ANGLE_MARGIN = 0.05
# Offset dihedrals at tetrahedral centres stay this far (rad) from 0 and pi.
_OFFSET_MARGIN = 0.1


@dataclasses.dataclass(frozen=True)
class InternalCoordinates:
  """The scaled internal-coordinate map of one molecule (static NumPy data; pure functions).

  Attributes:
    zmatrix: the Z-matrix.
    dim: 3N - 6.
    circular: [dim] bool, True for the free (periodic) dihedrals.
    widths: [dim] dy -> d(internal coordinate) scale of every coordinate (nm or rad).
    centres: [dim] the reference internal coordinates (y = 0).
    log_det_scale: sum of log(widths).
  """
  zmatrix: ZMatrix
  dim: int
  circular: np.ndarray
  widths: np.ndarray
  centres: np.ndarray
  log_det_scale: float

  @property
  def n_bonds(self) -> int:
    return self.zmatrix.n_atoms - 1

  @property
  def n_angles(self) -> int:
    return self.zmatrix.n_atoms - 2

  def to_cartesian(self, y: Array) -> tuple[Array, Array]:
    """y: [batch, dim] -> (x: [batch, 3N] nm, log |det dx/dy|: [batch])."""
    zm = self.zmatrix
    nb, na = self.n_bonds, self.n_angles
    w = jnp.asarray(self.widths, y.dtype)
    c = jnp.asarray(self.centres, y.dtype)
    q = c + w * y
    bonds, angles, torsions = q[:, :nb], q[:, nb:nb + na], q[:, nb + na:]
    x = _place_atoms(zm, bonds, angles, torsions)
    log_det = (self.log_det_scale + jnp.log(bonds[:, 1])
               + jnp.sum(2.0 * jnp.log(bonds[:, 2:]) + jnp.log(jnp.sin(angles[:, 1:])), -1))
    return x, log_det

  def to_internal(self, x: Array) -> tuple[Array, Array]:
    """x: [batch, 3N] (any rigid frame) -> (y: [batch, dim], log |det dy/dx|: [batch]).

    Bounded coordinates of configurations the map cannot produce come out with |y| > 1
    (see ``in_support``); dihedrals are wrapped, so y of a free dihedral is in (-1, 1].
    """
    zm = self.zmatrix
    R = x.reshape(x.shape[0], zm.n_atoms, 3)
    bonds = jnp.linalg.norm(R[:, zm.bond_atom] - R[:, zm.bond_ref], axis=-1)
    angles = _angles(R[:, zm.angle_atom], R[:, zm.angle_ref[:, 0]], R[:, zm.angle_ref[:, 1]])
    torsions = dihedral_from_points(R[:, zm.torsion_atom], R[:, zm.torsion_ref[:, 0]],
                          R[:, zm.torsion_ref[:, 1]], R[:, zm.torsion_ref[:, 2]])
    q = jnp.concatenate([bonds, angles, torsions], axis=-1)
    c = jnp.asarray(self.centres, x.dtype)
    d = q - c
    nt = bonds.shape[1] + angles.shape[1]
    d = d.at[:, nt:].set(wrap_angle(d[:, nt:]))
    y = d / jnp.asarray(self.widths, x.dtype)
    log_det = -(self.log_det_scale + jnp.log(bonds[:, 1])
                + jnp.sum(2.0 * jnp.log(bonds[:, 2:]) + jnp.log(jnp.sin(angles[:, 1:])), -1))
    return y, log_det

  def in_support(self, y: Array, tol: float = 1e-3) -> Array:
    """[batch] bool: every bounded coordinate within [-1 - tol, 1 + tol]."""
    bounded = ~jnp.asarray(self.circular)
    return jnp.all(jnp.where(bounded[None], jnp.abs(y) <= 1.0 + tol, True), axis=-1)


def make_internal_coordinates(zmatrix: ZMatrix, bond_width: float = 0.03,
                              angle_width: float = 0.6,
                              offset_width: float = 1.0) -> InternalCoordinates:
  """The scaled internal coordinates of a Z-matrix.

  Args:
    zmatrix: from ``cmtjax.targets.molecules.zmatrix.build_zmatrix``.
    bond_width: half-width (nm) of the bond interval around the reference bond lengths.
    angle_width: half-width (rad) of the angle interval (shrunk per angle to stay inside
      (0.05, pi - 0.05)).
    offset_width: half-width (rad) of the offset-dihedral interval (at most pi/2). At a
      tetrahedral centre it is shrunk per dihedral to keep 0.1 rad away from 0 and pi, where
      the atom would cross the plane of its references and invert the centre.

  Returns:
    The ``InternalCoordinates``.
  """
  for name, v in (("bond_width", bond_width), ("angle_width", angle_width),
                  ("offset_width", offset_width)):
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
      raise ValueError(f"{name} must be a positive number, got {v!r}")
  if offset_width > math.pi / 2:
    raise ValueError(f"offset_width must be at most pi/2 (a wider interval could mirror a "
                     f"stereocentre), got {offset_width}")
  if np.any(zmatrix.bonds0 <= bond_width):
    raise ValueError(f"bond_width={bond_width} nm is not smaller than the shortest reference "
                     f"bond ({zmatrix.bonds0.min():.4f} nm): bond lengths could reach zero")
  nb, na, nt = zmatrix.n_atoms - 1, zmatrix.n_atoms - 2, zmatrix.n_atoms - 3
  a0 = zmatrix.angles0
  angle_w = np.minimum(angle_width, np.minimum(a0, np.pi - a0) - _ANGLE_MARGIN)
  if np.any(angle_w <= 0):
    raise ValueError("a reference bond angle lies within 0.05 rad of 0 or pi")
  free = zmatrix.torsion_kind == FREE
  t0 = np.abs(zmatrix.torsions0)
  side_w = np.minimum(t0, np.pi - t0) - _OFFSET_MARGIN
  offset_w = np.where(zmatrix.tetrahedral, np.minimum(offset_width, side_w), offset_width)
  if np.any(~free & (offset_w <= 0)):
    raise ValueError("an offset dihedral at a tetrahedral centre is within 0.1 rad of 0 or pi "
                     "in the reference structure (a flattened stereocentre)")
  torsion_w = np.where(free, np.pi, offset_w)
  widths = np.concatenate([np.full(nb, bond_width), angle_w, torsion_w]).astype(np.float64)
  centres = np.concatenate([zmatrix.bonds0, a0, zmatrix.torsions0]).astype(np.float64)
  circular = np.concatenate([np.zeros(nb + na, bool), free])
  return InternalCoordinates(zmatrix=zmatrix, dim=nb + na + nt, circular=circular,
                             widths=widths, centres=centres,
                             log_det_scale=float(np.sum(np.log(widths))))


def _angles(a: Array, b: Array, c: Array) -> Array:
  u, v = a - b, c - b
  cos = jnp.sum(u * v, -1) / (jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1))
  return jnp.arccos(jnp.clip(cos, -1.0, 1.0))


def _unit(v: Array) -> Array:
  return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def _place_atoms(zm: ZMatrix, bonds: Array, angles: Array, torsions: Array) -> Array:
  """Cartesian positions [batch, 3N] of the canonical frame from internal coordinates."""
  batch = bonds.shape[0]
  dtype = bonds.dtype
  R = jnp.zeros((batch, zm.n_atoms, 3), dtype)
  a0, a1, a2 = (int(a) for a in zm.order[:3])
  zero = jnp.zeros((batch,), dtype)
  R = R.at[:, a1].set(jnp.stack([bonds[:, 0], zero, zero], -1))
  # Atom 2: bond to p2, angle against q2, in the xy plane (y > 0).
  p2, q2 = (int(a) for a in zm.angle_ref[0])
  u = _unit(R[:, q2] - R[:, p2])  # +-x axis
  v = jnp.broadcast_to(jnp.asarray([0.0, 1.0, 0.0], dtype), u.shape)
  b2, ang2 = bonds[:, 1:2], angles[:, 0:1]
  R = R.at[:, a2].set(R[:, p2] + b2 * (jnp.cos(ang2) * u + jnp.sin(ang2) * v))
  for level in zm.levels:
    atoms = zm.torsion_atom[level]
    j, k, l = (zm.torsion_ref[level, m] for m in range(3))
    b = bonds[:, 2 + level]
    a = angles[:, 1 + level]
    t = torsions[:, level]
    xj, xk, xl = R[:, j], R[:, k], R[:, l]
    e1 = _unit(xj - xk)
    n = _unit(jnp.cross(xk - xl, e1))
    m = jnp.cross(n, e1)
    d0 = -b * jnp.cos(a)
    d1 = b * jnp.sin(a) * jnp.cos(t)
    d2 = b * jnp.sin(a) * jnp.sin(t)
    pos = xj + d0[..., None] * e1 + d1[..., None] * m + d2[..., None] * n
    R = R.at[:, atoms].set(pos)
  return R.reshape(batch, 3 * zm.n_atoms)
