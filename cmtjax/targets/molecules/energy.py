"""AMBER potential energy with OBC2 implicit solvent, in JAX, batched.

``make_energy_fn`` closes over the parameter arrays of one molecule and returns pure functions
of positions in nm (one configuration ``R: [n_atoms, 3]`` or a batch ``R: [batch, n_atoms, 3]``)
giving energies in kJ/mol. The functional forms are those OpenMM evaluates for the same
``System``:

  * bonds:     sum_b  k_b / 2 (r_b - r0_b)^2
  * angles:    sum_a  k_a / 2 (theta_a - theta0_a)^2
  * torsions:  sum_t  k_t (1 + cos(n_t phi_t - phase_t))        (proper and improper)
  * nonbonded: sum_{i<j} 4 eps_ij [(s_ij/r)^12 - (s_ij/r)^6] + k_e q_i q_j / r,
               Lorentz-Berthelot mixing, exceptions (1-2, 1-3 zeroed; 1-4 scaled) replacing the
               pair values, no cutoff.
  * OBC generalised Born (Onufriev-Bashford-Case; OBC2: alpha, beta, gamma = 1, 0.8, 4.85)
    with dielectric offset 0.009 nm, plus the ACE non-polar surface term
    sum_i 4 pi gamma_sa (rho_i + 0.14)^2 (rho_i / B_i)^6. Two routes give it: OpenMM's
    ``GBSAOBCForce`` (``amber99_obc.xml``) and the ``CustomGBForce`` of ``implicit/obc2.xml``
    (Amber14). They differ in one detail, the Born-integral term for an atom engulfed by a
    neighbour's scaled sphere, which only ``GBSAOBCForce`` adds; ``GBSAParams.engulfed_term``
    says which (``parameters.py`` reads the form from the force).

Layout. Displacements are those of free space (no periodic box; what ``jax_md.space.free()``
computes: plain differences). Internally the terms work batch-minor: coordinates are a tuple
``P = (x, y, z)`` of ``[n_atoms, batch]`` arrays and all pair quantities are dense
``[n_atoms, n_atoms, batch]`` arrays, so the CPU vectorises over the (long, contiguous) batch
axis rather than over a short atom axis. Molecules here have <= ~100 atoms, for which dense pair
matrices are the fastest layout.

Gradients. Bonds and angles use reverse-mode autodiff. Torsions and the pair terms
(nonbonded, GB) have custom VJPs: the forward pass also computes the closed-form gradient
(torsions: the standard dphi/dr formulas; pair terms: dE/d r2_ij with the chain rule through
the Born radii written out), and the backward pass only scales it or pulls it back to
positions. Plain autodiff of the same functions (``torsion_energy``, ``nonbonded_energy``,
``gbsa_obc_energy``, the references in the tests) was 2-5x slower on CPU, as XLA re-fuses the
whole pair energy into the reductions of the transpose. The custom VJPs are first-order,
reverse-mode only (no ``jax.jvp`` / forward-mode Hessians of the energy).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.targets.molecules.parameters import ONE_4PI_EPS0, ForceFieldParams

Array = jax.Array
Coords = tuple  # (x, y, z), each [n, batch]

OBC2_ALPHA, OBC2_BETA, OBC2_GAMMA = 1.0, 0.8, 4.85
DIELECTRIC_OFFSET = 0.009  # nm
PROBE_RADIUS = 0.14  # nm


class EnergyFns(NamedTuple):
  """Energy functions of one molecule (positions in nm, energies in kJ/mol).

  Attributes:
    energy: ``R: [n_atoms, 3] -> []`` total potential energy.
    terms: ``R: [n_atoms, 3] -> dict[str, []]`` energy per term (bond, angle, torsion,
      nonbonded and, with implicit solvent, gb).
    batch_energy: ``R: [batch, n_atoms, 3] -> [batch]``.
    batch_terms: ``R: [batch, n_atoms, 3] -> dict[str, [batch]]``.
    batch_energy_and_forces: ``R: [batch, n_atoms, 3] -> ([batch], [batch, n_atoms, 3])``,
      forces = -dE/dR in kJ/mol/nm.
    dtype: floating dtype the parameters were cast to.
  """
  energy: Callable[[Array], Array]
  terms: Callable[[Array], dict]
  batch_energy: Callable[[Array], Array]
  batch_terms: Callable[[Array], dict]
  batch_energy_and_forces: Callable[[Array], tuple]
  dtype: jnp.dtype


def to_components(R: Array) -> Coords:
  """R: [batch, n, 3] -> (x, y, z), each [n, batch]."""
  return tuple(jnp.transpose(R[..., k]) for k in range(3))


def _gather(P: Coords, idx: Array) -> Coords:
  return tuple(p[idx] for p in P)


def _sub(a: Coords, b: Coords) -> Coords:
  return tuple(u - v for u, v in zip(a, b))


def _dot(a: Coords, b: Coords) -> Array:
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Coords, b: Coords) -> Coords:
  return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _safe_sqrt(x: Array) -> Array:
  """sqrt with a finite gradient at zero."""
  pos = x > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def bond_energy(P: Coords, idx: Array, r0: Array, k: Array) -> Array:
  """Harmonic bonds. P: 3 x [n, batch]; idx: [m, 2]; r0, k: [m]. Returns [batch] kJ/mol."""
  d = _sub(_gather(P, idx[:, 0]), _gather(P, idx[:, 1]))
  r = _safe_sqrt(_dot(d, d))
  return 0.5 * jnp.sum(k[:, None] * (r - r0[:, None]) ** 2, axis=0)


def bond_angle(a: Coords, b: Coords, c: Coords) -> Array:
  """Angle a-b-c in [0, pi]; 3 x [m, batch] each -> [m, batch]."""
  u = _sub(a, b)
  v = _sub(c, b)
  w = _cross(u, v)
  return jnp.arctan2(_safe_sqrt(_dot(w, w)), _dot(u, v))


def angle_energy(P: Coords, idx: Array, theta0: Array, k: Array) -> Array:
  """Harmonic angles. P: 3 x [n, batch]; idx: [m, 3]; theta0, k: [m]. Returns [batch]."""
  theta = bond_angle(*(_gather(P, idx[:, j]) for j in range(3)))
  return 0.5 * jnp.sum(k[:, None] * (theta - theta0[:, None]) ** 2, axis=0)


def dihedral(a: Coords, b: Coords, c: Coords, d: Coords) -> Array:
  """Dihedral angle a-b-c-d in (-pi, pi] (IUPAC sign); 3 x [m, batch] each -> [m, batch]."""
  b0 = _sub(b, a)
  b1 = _sub(c, b)
  b2 = _sub(d, c)
  n1 = _cross(b0, b1)
  n2 = _cross(b1, b2)
  x = _dot(n1, n2)
  y = _dot(_cross(n1, n2), b1) / _safe_sqrt(_dot(b1, b1))
  return jnp.arctan2(y, x)


def torsion_energy(P: Coords, idx: Array, n: Array, phase: Array, k: Array) -> Array:
  """Periodic torsions. P: 3 x [n, batch]; idx: [m, 4]; n, phase, k: [m]. Returns [batch]."""
  phi = dihedral(*(_gather(P, idx[:, j]) for j in range(4)))
  return jnp.sum(k[:, None] * (1.0 + jnp.cos(n[:, None] * phi - phase[:, None])), axis=0)


def torsion_energy_and_grad(P: Coords, idx: Array, n: Array, phase: Array, k: Array,
                            scatter: Array) -> tuple[Array, Coords]:
  """``torsion_energy`` and its closed-form gradient with respect to positions.

  With F = a - b, G = b - c, H = d - c, A = F x G, B = H x G (the same phi as ``dihedral``):
  dphi/da = -|G| A / |A|^2,  dphi/dd = |G| B / |B|^2,
  dphi/db = -dphi/da + (F.G) A / (|A|^2 |G|) - (H.G) B / (|B|^2 |G|),
  dphi/dc = -dphi/dd - (F.G) A / (|A|^2 |G|) + (H.G) B / (|B|^2 |G|).

  Args:
    P: positions, 3 x [n_atoms, batch].
    idx: [m, 4] atom indices; n, phase, k: [m].
    scatter: [4, n_atoms, m] one-hot matrices (scatter[s, i, t] = 1 if atom s of torsion t is i).

  Returns:
    ``([batch] energy, 3 x [n_atoms, batch] dE/dP)``.
  """
  a, b, c, d = (_gather(P, idx[:, j]) for j in range(4))
  f_vec = _sub(a, b)
  g_vec = _sub(b, c)
  h_vec = _sub(d, c)
  a_vec = _cross(f_vec, g_vec)
  b_vec = _cross(h_vec, g_vec)
  a2 = _dot(a_vec, a_vec)
  b2 = _dot(b_vec, b_vec)
  g_norm = _safe_sqrt(_dot(g_vec, g_vec))
  phi = jnp.arctan2(_dot(_cross(b_vec, a_vec), g_vec) / g_norm, _dot(a_vec, b_vec))
  arg = n[:, None] * phi - phase[:, None]
  energy = jnp.sum(k[:, None] * (1.0 + jnp.cos(arg)), axis=0)
  de_dphi = -(k * n)[:, None] * jnp.sin(arg)
  ca = de_dphi / a2
  cb = de_dphi / b2
  fg = _dot(f_vec, g_vec) / g_norm
  hg = _dot(h_vec, g_vec) / g_norm
  grads = []
  for comp in range(3):
    ga = -g_norm * ca * a_vec[comp]
    gd = g_norm * cb * b_vec[comp]
    cross_term = fg * ca * a_vec[comp] - hg * cb * b_vec[comp]
    gb_ = -ga + cross_term
    gc = -gd - cross_term
    grads.append(scatter[0] @ ga + scatter[1] @ gb_ + scatter[2] @ gc + scatter[3] @ gd)
  return energy, tuple(grads)


def _squared_distances(P: Coords) -> Array:
  return sum((p[:, None, :] - p[None, :, :]) ** 2 for p in P)


@jax.custom_vjp
def pair_squared_distances(P: Coords) -> Array:
  """Squared distance matrix. P: 3 x [n, batch] -> [n, n, batch] (nm^2)."""
  return _squared_distances(P)


def _pair_squared_distances_fwd(P):
  return _squared_distances(P), P


def _pair_squared_distances_bwd(P, g):
  # d r2_ij / d x_i = 2 (x_i - x_j):  grad x_i = 2 sum_j (g_ij + g_ji) (x_i - x_j).
  sym = g + jnp.swapaxes(g, 0, 1)
  row = jnp.sum(sym, axis=1)
  return (tuple(2.0 * (row * p - jnp.sum(sym * p[None, :, :], axis=1)) for p in P),)


pair_squared_distances.defvjp(_pair_squared_distances_fwd, _pair_squared_distances_bwd)


def _safe_distances(r2: Array) -> tuple[Array, Array, Array]:
  """Distances [n, n, batch] with the diagonal set to 1 (never used), and its mask."""
  eye = jnp.eye(r2.shape[0], dtype=bool)[:, :, None]
  r2_safe = jnp.where(eye, 1.0, r2)
  return r2_safe, jnp.sqrt(r2_safe), eye


def nonbonded_energy(r2: Array, qq: Array, sigma2: Array, eps4: Array) -> Array:
  """Coulomb + Lennard-Jones from dense pair matrices.

  Args:
    r2: [n, n, batch] squared distances (nm^2).
    qq: [n, n] k_e q_i q_j (kJ/mol nm), exceptions applied, zero diagonal.
    sigma2: [n, n] sigma_ij^2 (nm^2).
    eps4: [n, n] 4 eps_ij (kJ/mol), zero diagonal.

  Returns:
    [batch] energy in kJ/mol (each pair counted once).
  """
  r2_safe, r, _ = _safe_distances(r2)
  lj = (eps4 != 0.0)[:, :, None]
  # Pairs without Lennard-Jones (1-2, 1-3 exceptions, hydroxyl H) must not turn a close
  # contact into 0 * inf = NaN; the inner `where` keeps their gradient finite too.
  s6 = (sigma2[:, :, None] / jnp.where(lj, r2_safe, 1.0)) ** 3
  pair = qq[:, :, None] / r + jnp.where(lj, eps4[:, :, None] * (s6 * s6 - s6), 0.0)
  return 0.5 * jnp.sum(pair, axis=(0, 1))


def obc_born_radii(r: Array, eye: Array, offset_radius: Array, scaled_radius: Array,
                   radius: Array, obc: tuple = (OBC2_ALPHA, OBC2_BETA, OBC2_GAMMA),
                   engulfed_term: bool = True) -> Array:
  """OBC effective Born radii (OBC2 by default).

  Args:
    r: [n, n, batch] distances (nm), diagonal arbitrary but nonzero.
    eye: [n, n, 1] boolean diagonal mask.
    offset_radius: [n] rho_i - 0.009 nm.
    scaled_radius: [n] (rho_j - 0.009 nm) * scale_j.
    radius: [n] rho_i (nm).
    obc: (alpha, beta, gamma) of tanh(alpha psi - beta psi^2 + gamma psi^3).
    engulfed_term: add 2 (1/o_i - l_ij) when atom i lies inside j's scaled sphere
      (``GBSAOBCForce``; the ``CustomGBForce`` of ``implicit/obc2.xml`` leaves it out).

  Returns:
    [n, batch] Born radii B_i (nm).
  """
  alpha, beta, gamma = obc
  oi = offset_radius[:, None, None]
  sj = scaled_radius[None, :, None]
  r_plus = r + sj
  active = jnp.logical_and(oi < r_plus, jnp.logical_not(eye))
  l = 1.0 / jnp.maximum(oi, jnp.abs(r - sj))
  u = 1.0 / r_plus
  l2, u2 = l * l, u * u
  term = (l - u + 0.25 * r * (u2 - l2) + (0.5 / r) * jnp.log(u / l)
          + (0.25 * sj * sj / r) * (l2 - u2))
  if engulfed_term:
    term = term + jnp.where(oi < sj - r, 2.0 * (1.0 / oi - l), 0.0)
  psi = 0.5 * offset_radius[:, None] * jnp.sum(jnp.where(active, term, 0.0), axis=1)
  tanh_sum = jnp.tanh(alpha * psi - beta * psi**2 + gamma * psi**3)
  return 1.0 / (1.0 / offset_radius[:, None] - tanh_sum / radius[:, None])


def gbsa_obc_energy(r2: Array, charge: Array, radius: Array, scale: Array, prefactor: float,
                    surface_factor: float, offset: float = DIELECTRIC_OFFSET,
                    obc: tuple = (OBC2_ALPHA, OBC2_BETA, OBC2_GAMMA),
                    engulfed_term: bool = True) -> Array:
  """OBC generalised-Born polar solvation plus the ACE non-polar surface term.

  Args:
    r2: [n, n, batch] squared distances (nm^2).
    charge: [n] GB charges (e).
    radius: [n] GB radii rho (nm).
    scale: [n] overlap scale factors.
    prefactor: -k_e (1/eps_solute - 1/eps_solvent) in kJ/mol nm e^-2.
    surface_factor: 4 pi gamma_sa in kJ/mol/nm^2.
    offset: dielectric offset (nm).
    obc, engulfed_term: the OBC form (see ``obc_born_radii``).

  Returns:
    [batch] energy in kJ/mol.
  """
  _, r, eye = _safe_distances(r2)
  offset_radius = radius - offset
  born = obc_born_radii(r, eye, offset_radius, offset_radius * scale, radius, obc,
                        engulfed_term)
  bb = born[:, None, :] * born[None, :, :]
  f = jnp.sqrt(r2 + bb * jnp.exp(-r2 / (4.0 * bb)))
  qq = (charge[:, None] * charge[None, :])[:, :, None]
  polar = 0.5 * prefactor * jnp.sum(qq / f, axis=(0, 1))
  ace = ((radius + PROBE_RADIUS) ** 2)[:, None] * (radius[:, None] / born) ** 6
  return polar + surface_factor * jnp.sum(ace, axis=0)


def nonbonded_energy_and_r2_grad(r2: Array, qq: Array, sigma2: Array,
                                 eps4: Array) -> tuple[Array, Array]:
  """``nonbonded_energy`` and its closed-form gradient with respect to r2.

  Returns:
    ``([batch] energy, [n, n, batch] dE/d r2_ij)`` where the energy is read as a function of
    the full (symmetric) matrix, so each unordered pair gets half its derivative in (i, j) and
    half in (j, i).
  """
  r2_safe, r, _ = _safe_distances(r2)
  lj = (eps4 != 0.0)[:, :, None]
  inv_r2 = 1.0 / jnp.where(lj, r2_safe, 1.0)
  s6 = (sigma2[:, :, None] * inv_r2) ** 3
  coulomb = qq[:, :, None] / r
  lj_e = jnp.where(lj, eps4[:, :, None] * (s6 * s6 - s6), 0.0)
  energy = 0.5 * jnp.sum(coulomb + lj_e, axis=(0, 1))
  # d/dr2 [q/r] = -q / (2 r^3);  d/dr2 [4 eps (s6^2 - s6)] = 4 eps (-6 s6^2 + 3 s6) / r2.
  grad = 0.5 * (-0.5 * coulomb / r2_safe
                + jnp.where(lj, eps4[:, :, None] * (3.0 * s6 - 6.0 * s6 * s6) * inv_r2, 0.0))
  return energy, grad


def gbsa_obc_energy_and_r2_grad(r2: Array, charge: Array, radius: Array, scale: Array,
                                prefactor: float, surface_factor: float,
                                offset: float = DIELECTRIC_OFFSET,
                                obc: tuple = (OBC2_ALPHA, OBC2_BETA, OBC2_GAMMA),
                                engulfed_term: bool = True) -> tuple[Array, Array]:
  """``gbsa_obc_energy`` and its closed-form gradient with respect to r2 (chain rule through
  the Born radii), without reverse-mode autodiff.

  Returns:
    ``([batch] energy, [n, n, batch] dE/d r2_ij)``.
  """
  alpha, beta, gamma = obc
  r2_safe, r, eye = _safe_distances(r2)
  offset_radius = radius - offset
  oi = offset_radius[:, None, None]
  sj = (offset_radius * scale)[None, :, None]
  # Born-radius integrand and its derivative in r (the max() branch is piecewise constant).
  r_plus = r + sj
  active = jnp.logical_and(oi < r_plus, jnp.logical_not(eye))
  use_r = jnp.abs(r - sj) > oi
  l = 1.0 / jnp.where(use_r, jnp.abs(r - sj), oi)
  dl = jnp.where(use_r, -l * l * jnp.sign(r - sj), 0.0)
  u = 1.0 / r_plus
  du = -u * u
  l2, u2 = l * l, u * u
  inv_r = 1.0 / r
  log_ratio = jnp.log(u / l)
  sj2 = sj * sj
  term = (l - u + 0.25 * r * (u2 - l2) + 0.5 * inv_r * log_ratio
          + 0.25 * sj2 * inv_r * (l2 - u2))
  dterm = (dl - du + 0.25 * (u2 - l2) + 0.5 * r * (u * du - l * dl)
           - 0.5 * inv_r * inv_r * log_ratio + 0.5 * inv_r * (du / u - dl / l)
           - 0.25 * sj2 * inv_r * inv_r * (l2 - u2) + 0.5 * sj2 * inv_r * (l * dl - u * du))
  if engulfed_term:
    inner = oi < sj - r
    term = term + jnp.where(inner, 2.0 * (1.0 / oi - l), 0.0)
    dterm = dterm - jnp.where(inner, 2.0 * dl, 0.0)
  term = jnp.where(active, term, 0.0)
  dterm = jnp.where(active, dterm, 0.0)
  half_off = 0.5 * offset_radius[:, None]
  psi = half_off * jnp.sum(term, axis=1)
  arg = alpha * psi - beta * psi**2 + gamma * psi**3
  tanh_sum = jnp.tanh(arg)
  born = 1.0 / (1.0 / offset_radius[:, None] - tanh_sum / radius[:, None])
  dborn_dpsi = (born * born * (1.0 - tanh_sum * tanh_sum) / radius[:, None]
                * (alpha - 2.0 * beta * psi + 3.0 * gamma * psi**2))
  # Polar term 1/2 pre sum_ij q_i q_j / f_ij,  f = sqrt(r2 + bb exp(-r2 / 4 bb)),  bb = B_i B_j.
  bb = born[:, None, :] * born[None, :, :]
  expo = jnp.exp(-r2 / (4.0 * bb))
  f = jnp.sqrt(r2 + bb * expo)
  pqq = (0.5 * prefactor * charge[:, None] * charge[None, :])[:, :, None]
  pair = pqq / f
  de_df = -pair / f
  de_dr2 = de_df * (1.0 - 0.25 * expo) / (2.0 * f)
  de_dbb = de_df * expo * (1.0 + r2 / (4.0 * bb)) / (2.0 * f)
  ace = surface_factor * ((radius + PROBE_RADIUS) ** 2)[:, None] * (radius[:, None] / born) ** 6
  energy = jnp.sum(pair, axis=(0, 1)) + jnp.sum(ace, axis=0)
  de_dborn = 2.0 * jnp.sum(de_dbb * born[None, :, :], axis=1) - 6.0 * ace / born
  de_dpsi = de_dborn * dborn_dpsi
  # Born part: dE/dr_ij = dE/dpsi_i * 1/2 off_i * dterm_ij/dr, then d/dr2 = d/dr / (2 r).
  de_dr2 = de_dr2 + (de_dpsi * half_off)[:, None, :] * dterm * 0.5 * inv_r
  return energy, jnp.where(eye, 0.0, de_dr2)


def _r2_vjp_to_positions(P: Coords, g: Array) -> Coords:
  """Pulls dE/d r2 ([n, n, batch]) back to positions: 2 sum_j (g_ij + g_ji) (x_i - x_j)."""
  sym = g + jnp.swapaxes(g, 0, 1)
  row = jnp.sum(sym, axis=1)
  return tuple(2.0 * (row * p - jnp.sum(sym * p[None, :, :], axis=1)) for p in P)


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
    ``EnergyFns`` (positions in nm, energies in kJ/mol).
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
    gb_prefactor = -gb.coulomb * (1.0 / gb.solute_dielectric - 1.0 / gb.solvent_dielectric)
    gb_surface = 4.0 * np.pi * gb.surface_area_energy
    gb_form = dict(offset=gb.offset, obc=(gb.alpha, gb.beta, gb.gamma),
                   engulfed_term=gb.engulfed_term)

  np_dtype = np.float64 if dtype == jnp.float64 else np.float32
  # NumPy constants of the working dtype (closed over by the custom VJP below).
  c = {name: (np.asarray(a, np.int32) if np.issubdtype(a.dtype, np.integer)
              else np.asarray(a, np_dtype)) for name, a in arrays.items()}

  def _pair_terms_fwd(P: Coords):
    r2 = _squared_distances(P)
    e_nb, g_nb = nonbonded_energy_and_r2_grad(r2, c["qq"], c["sigma2"], c["eps4"])
    if gb is None:
      return (e_nb,), (P, (g_nb,))
    e_gb, g_gb = gbsa_obc_energy_and_r2_grad(r2, c["gb_charge"], c["gb_radius"],
                                             c["gb_scale"], gb_prefactor, gb_surface,
                                             **gb_form)
    return (e_nb, e_gb), (P, (g_nb, g_gb))

  @jax.custom_vjp
  def pair_terms(P: Coords) -> tuple:
    """Nonbonded (and GB) energies [batch]; reverse mode uses the closed-form dE/d r2."""
    r2 = _squared_distances(P)
    out = (nonbonded_energy(r2, c["qq"], c["sigma2"], c["eps4"]),)
    if gb is not None:
      out += (gbsa_obc_energy(r2, c["gb_charge"], c["gb_radius"], c["gb_scale"],
                              gb_prefactor, gb_surface, **gb_form),)
    return out

  def _pair_terms_bwd(res, cotangents):
    P, grads = res
    g = sum(ct[None, None, :] * gr for ct, gr in zip(cotangents, grads))
    return (_r2_vjp_to_positions(P, g),)

  pair_terms.defvjp(_pair_terms_fwd, _pair_terms_bwd)

  torsion_scatter = np.zeros((4, n_atoms, len(params.torsion_idx)), np_dtype)
  for slot in range(4):
    torsion_scatter[slot, params.torsion_idx[:, slot], np.arange(len(params.torsion_idx))] = 1.0
  torsion_args = (c["torsion_idx"], c["torsion_n"], c["torsion_phase"], c["torsion_k"])

  @jax.custom_vjp
  def torsion_term(P: Coords) -> Array:
    """Torsion energy [batch]; reverse mode uses the closed-form gradient."""
    return torsion_energy(P, *torsion_args)

  def _torsion_term_fwd(P: Coords):
    e, grads = torsion_energy_and_grad(P, *torsion_args, torsion_scatter)
    return e, grads

  def _torsion_term_bwd(grads, ct):
    return (tuple(ct[None, :] * g for g in grads),)

  torsion_term.defvjp(_torsion_term_fwd, _torsion_term_bwd)

  def batch_terms(R: Array) -> dict:
    check_precision_available(dtype)
    R = jnp.asarray(R, dtype)
    if R.ndim != 3 or R.shape[1:] != (n_atoms, 3):
      raise ValueError(f"expected positions of shape (batch, {n_atoms}, 3), got {R.shape}")
    P = to_components(R)
    out = {
      "bond": bond_energy(P, c["bond_idx"], c["bond_r0"], c["bond_k"]),
      "angle": angle_energy(P, c["angle_idx"], c["angle_theta0"], c["angle_k"]),
      "torsion": torsion_term(P),
    }
    pair = pair_terms(P)
    out["nonbonded"] = pair[0]
    if gb is not None:
      out["gb"] = pair[1]
    return out

  def batch_energy(R: Array) -> Array:
    return sum(batch_terms(R).values())

  def batch_energy_and_forces(R: Array) -> tuple[Array, Array]:
    def total(R):
      e = batch_energy(R)
      return jnp.sum(e), e
    grad, e = jax.grad(total, has_aux=True)(jnp.asarray(R, dtype))
    return e, -grad

  def terms(R: Array) -> dict:
    return {k: v[0] for k, v in batch_terms(R[None]).items()}

  def energy(R: Array) -> Array:
    return batch_energy(R[None])[0]

  return EnergyFns(energy=energy, terms=terms, batch_energy=batch_energy,
                   batch_terms=batch_terms, batch_energy_and_forces=batch_energy_and_forces,
                   dtype=dtype)
