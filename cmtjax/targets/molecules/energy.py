"""AMBER potential energy with OBC2 implicit solvent, in JAX on jax-md free-space displacements.

Every term is a pure function of positions ``R: [n_atoms, 3]`` in nm and returns a scalar in
kJ/mol; ``make_energy_fn`` closes over the parameter arrays of one molecule. Batch with
``jax.vmap``. The functional forms are those OpenMM evaluates for the same ``System``:

  * bonds:     sum_b  k_b / 2 (r_b - r0_b)^2
  * angles:    sum_a  k_a / 2 (theta_a - theta0_a)^2
  * torsions:  sum_t  k_t (1 + cos(n_t phi_t - phase_t))        (proper and improper)
  * nonbonded: sum_{i<j} 4 eps_ij [(s_ij/r)^12 - (s_ij/r)^6] + k_e q_i q_j / r,
               Lorentz-Berthelot mixing, exceptions (1-2, 1-3 zeroed; 1-4 scaled) replacing the
               pair values, no cutoff.
  * OBC2 generalised Born (Onufriev-Bashford-Case, alpha, beta, gamma = 1, 0.8, 4.85) with
    dielectric offset 0.009 nm, plus the ACE non-polar surface term
    sum_i 4 pi gamma_sa (rho_i + 0.14)^2 (rho_i / B_i)^6.

All pair quantities are dense ``[n_atoms, n_atoms]`` matrices (molecules here have <= ~100 atoms),
which vectorise well over a batch.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax_md import space
import numpy as np

from cmtjax.targets.molecules.parameters import ONE_4PI_EPS0, ForceFieldParams

Array = jax.Array

OBC2_ALPHA, OBC2_BETA, OBC2_GAMMA = 1.0, 0.8, 4.85
DIELECTRIC_OFFSET = 0.009  # nm
PROBE_RADIUS = 0.14  # nm

_DISPLACEMENT, _ = space.free()
_PAIR_DISPLACEMENT = space.map_product(_DISPLACEMENT)
_BOND_DISPLACEMENT = space.map_bond(_DISPLACEMENT)


class EnergyFns(NamedTuple):
  """Energy functions of one molecule.

  Attributes:
    energy: ``R: [n_atoms, 3] -> []`` total potential energy in kJ/mol.
    terms: ``R: [n_atoms, 3] -> dict[str, []]`` energy per term (bond, angle, torsion,
      nonbonded, gb) in kJ/mol.
    dtype: floating dtype the parameters were cast to.
  """
  energy: Callable[[Array], Array]
  terms: Callable[[Array], dict]
  dtype: jnp.dtype


def _safe_norm(v: Array, axis: int = -1) -> Array:
  """Euclidean norm with a finite gradient at zero."""
  sq = jnp.sum(v * v, axis=axis)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def bond_energy(R: Array, idx: Array, r0: Array, k: Array) -> Array:
  """Harmonic bonds. R: [n, 3]; idx: [m, 2]; r0, k: [m]. Returns [] kJ/mol."""
  r = _safe_norm(_BOND_DISPLACEMENT(R[idx[:, 0]], R[idx[:, 1]]))
  return 0.5 * jnp.sum(k * (r - r0) ** 2)


def _angle(a: Array, b: Array, c: Array) -> Array:
  """Angle a-b-c in [0, pi], [m, 3] each -> [m]."""
  u = _BOND_DISPLACEMENT(a, b)
  v = _BOND_DISPLACEMENT(c, b)
  cross = _safe_norm(jnp.cross(u, v))
  return jnp.arctan2(cross, jnp.sum(u * v, axis=-1))


def angle_energy(R: Array, idx: Array, theta0: Array, k: Array) -> Array:
  """Harmonic angles. R: [n, 3]; idx: [m, 3]; theta0, k: [m]. Returns [] kJ/mol."""
  theta = _angle(R[idx[:, 0]], R[idx[:, 1]], R[idx[:, 2]])
  return 0.5 * jnp.sum(k * (theta - theta0) ** 2)


def dihedral(a: Array, b: Array, c: Array, d: Array) -> Array:
  """Dihedral angle a-b-c-d in (-pi, pi] (IUPAC sign), [m, 3] each -> [m]."""
  b0 = _BOND_DISPLACEMENT(b, a)
  b1 = _BOND_DISPLACEMENT(c, b)
  b2 = _BOND_DISPLACEMENT(d, c)
  n1 = jnp.cross(b0, b1)
  n2 = jnp.cross(b1, b2)
  x = jnp.sum(n1 * n2, axis=-1)
  y = jnp.sum(jnp.cross(n1, n2) * b1, axis=-1) / _safe_norm(b1)
  return jnp.arctan2(y, x)


def torsion_energy(R: Array, idx: Array, n: Array, phase: Array, k: Array) -> Array:
  """Periodic torsions. R: [n, 3]; idx: [m, 4]; n, phase, k: [m]. Returns [] kJ/mol."""
  phi = dihedral(R[idx[:, 0]], R[idx[:, 1]], R[idx[:, 2]], R[idx[:, 3]])
  return jnp.sum(k * (1.0 + jnp.cos(n * phi - phase)))


def _pair_geometry(R: Array):
  """Squared distances and distances [n, n], with the diagonal made safe (r = 1 there)."""
  n = R.shape[0]
  dr = _PAIR_DISPLACEMENT(R, R)
  r2 = jnp.sum(dr * dr, axis=-1)
  eye = jnp.eye(n, dtype=bool)
  r2_safe = jnp.where(eye, 1.0, r2)
  return r2, r2_safe, jnp.sqrt(r2_safe), eye


def nonbonded_energy(r2_safe: Array, r: Array, qq: Array, sigma2: Array, eps4: Array) -> Array:
  """Coulomb + Lennard-Jones from dense pair matrices (zero on the diagonal).

  Args:
    r2_safe: [n, n] squared distances (nm^2), diagonal nonzero.
    r: [n, n] distances (nm).
    qq: [n, n] k_e q_i q_j (kJ/mol nm), exceptions applied.
    sigma2: [n, n] sigma_ij^2 (nm^2).
    eps4: [n, n] 4 eps_ij (kJ/mol).

  Returns:
    [] energy in kJ/mol (each pair counted once).
  """
  lj = eps4 != 0.0
  # Pairs without Lennard-Jones (1-2, 1-3 exceptions, hydroxyl H) must not turn a close
  # contact into 0 * inf = NaN; the inner `where` keeps their gradient finite too.
  s6 = (sigma2 / jnp.where(lj, r2_safe, 1.0)) ** 3
  pair = qq / r + jnp.where(lj, eps4 * (s6 * s6 - s6), 0.0)
  return 0.5 * jnp.sum(pair)


def obc_born_radii(r: Array, eye: Array, offset_radius: Array, scaled_radius: Array,
                   radius: Array) -> Array:
  """OBC2 effective Born radii.

  Args:
    r: [n, n] distances (nm), diagonal arbitrary but nonzero.
    eye: [n, n] boolean diagonal mask.
    offset_radius: [n] rho_i - 0.009 nm.
    scaled_radius: [n] (rho_j - 0.009 nm) * scale_j.
    radius: [n] rho_i (nm).

  Returns:
    [n] Born radii B_i (nm).
  """
  oi = offset_radius[:, None]
  sj = scaled_radius[None, :]
  r_plus = r + sj
  active = jnp.logical_and(oi < r_plus, jnp.logical_not(eye))
  l = 1.0 / jnp.maximum(oi, jnp.abs(r - sj))
  u = 1.0 / r_plus
  l2, u2 = l * l, u * u
  term = (l - u + 0.25 * r * (u2 - l2) + (0.5 / r) * jnp.log(u / l)
          + (0.25 * sj * sj / r) * (l2 - u2))
  term = term + jnp.where(oi < sj - r, 2.0 * (1.0 / oi - l), 0.0)
  psi = 0.5 * offset_radius * jnp.sum(jnp.where(active, term, 0.0), axis=1)
  tanh_sum = jnp.tanh(OBC2_ALPHA * psi - OBC2_BETA * psi**2 + OBC2_GAMMA * psi**3)
  return 1.0 / (1.0 / offset_radius - tanh_sum / radius)


def gbsa_obc_energy(r2: Array, r: Array, eye: Array, charge: Array, radius: Array,
                    scale: Array, prefactor: float, surface_factor: float) -> Array:
  """OBC2 generalised-Born polar solvation plus the ACE non-polar surface term.

  Args:
    r2: [n, n] squared distances (nm^2), zero on the diagonal.
    r: [n, n] distances (nm), nonzero on the diagonal.
    eye: [n, n] boolean diagonal mask.
    charge: [n] GB charges (e).
    radius: [n] GB radii rho (nm).
    scale: [n] overlap scale factors.
    prefactor: -k_e (1/eps_solute - 1/eps_solvent) in kJ/mol nm e^-2.
    surface_factor: 4 pi gamma_sa in kJ/mol/nm^2.

  Returns:
    [] energy in kJ/mol.
  """
  offset_radius = radius - DIELECTRIC_OFFSET
  born = obc_born_radii(r, eye, offset_radius, offset_radius * scale, radius)
  bb = born[:, None] * born[None, :]
  f = jnp.sqrt(r2 + bb * jnp.exp(-r2 / (4.0 * bb)))
  polar = 0.5 * prefactor * jnp.sum(charge[:, None] * charge[None, :] / f)
  nonpolar = surface_factor * jnp.sum((radius + PROBE_RADIUS) ** 2 * (radius / born) ** 6)
  return polar + nonpolar


def check_precision_available(dtype) -> None:
  """Raises a clear error when float64 is requested while JAX's x64 mode is off."""
  if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
    raise RuntimeError("float64 energies need x64: call inside `with jax.enable_x64(True):` "
                       "or set jax.config.update('jax_enable_x64', True)")


def _pair_matrices(p: ForceFieldParams):
  """Dense [n, n] k_e q_i q_j, sigma_ij^2 and 4 eps_ij with exceptions applied (NumPy, f64)."""
  q = p.charge
  qq = ONE_4PI_EPS0 * q[:, None] * q[None, :]
  sigma = 0.5 * (p.sigma[:, None] + p.sigma[None, :])
  eps = np.sqrt(p.epsilon[:, None] * p.epsilon[None, :])
  i, j = p.exception_idx[:, 0], p.exception_idx[:, 1]
  for a, b in ((i, j), (j, i)):
    qq[a, b] = ONE_4PI_EPS0 * p.exception_qq
    sigma[a, b] = p.exception_sigma
    eps[a, b] = p.exception_epsilon
  np.fill_diagonal(qq, 0.0)
  np.fill_diagonal(eps, 0.0)
  return qq, sigma**2, 4.0 * eps


def make_energy_fn(params: ForceFieldParams, dtype=jnp.float32) -> EnergyFns:
  """Builds the potential energy of one molecule.

  Args:
    params: force-field parameters (``params_from_system``).
    dtype: ``jnp.float32`` or ``jnp.float64`` (the latter needs x64 enabled when called).

  Returns:
    ``EnergyFns`` whose ``energy(R: [n_atoms, 3]) -> []`` is in kJ/mol for R in nm.
  """
  dtype = jnp.dtype(dtype)
  n_atoms = params.n_atoms
  qq, sigma2, eps4 = _pair_matrices(params)
  arrays = dict(
    bond_idx=params.bond_idx, bond_r0=params.bond_r0, bond_k=params.bond_k,
    angle_idx=params.angle_idx, angle_theta0=params.angle_theta0, angle_k=params.angle_k,
    torsion_idx=params.torsion_idx, torsion_n=params.torsion_n,
    torsion_phase=params.torsion_phase, torsion_k=params.torsion_k,
    qq=qq, sigma2=sigma2, eps4=eps4)
  gb = params.gbsa
  if gb is not None:
    arrays.update(gb_charge=gb.charge, gb_radius=gb.radius, gb_scale=gb.scale)
    gb_prefactor = -ONE_4PI_EPS0 * (1.0 / gb.solute_dielectric - 1.0 / gb.solvent_dielectric)
    gb_surface = 4.0 * np.pi * gb.surface_area_energy

  def cast(name):
    a = arrays[name]
    if np.issubdtype(a.dtype, np.integer):
      return jnp.asarray(a, jnp.int32)
    return jnp.asarray(a, dtype)

  def terms(R: Array) -> dict:
    check_precision_available(dtype)
    R = jnp.asarray(R, dtype)
    if R.shape != (n_atoms, 3):
      raise ValueError(f"expected positions of shape ({n_atoms}, 3), got {R.shape}")
    c = {name: cast(name) for name in arrays}
    out = {
      "bond": bond_energy(R, c["bond_idx"], c["bond_r0"], c["bond_k"]),
      "angle": angle_energy(R, c["angle_idx"], c["angle_theta0"], c["angle_k"]),
      "torsion": torsion_energy(R, c["torsion_idx"], c["torsion_n"], c["torsion_phase"],
                                c["torsion_k"]),
    }
    r2, r2_safe, r, eye = _pair_geometry(R)
    out["nonbonded"] = nonbonded_energy(r2_safe, r, c["qq"], c["sigma2"], c["eps4"])
    if gb is not None:
      out["gb"] = gbsa_obc_energy(r2, r, eye, c["gb_charge"], c["gb_radius"], c["gb_scale"],
                                  gb_prefactor, gb_surface)
    return out

  def energy(R: Array) -> Array:
    return sum(terms(R).values())

  return EnergyFns(energy=energy, terms=terms, dtype=dtype)
