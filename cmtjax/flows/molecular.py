"""A coupling flow on internal coordinates whose densities live in Cartesian space.

Spaces (see ``cmtjax.flows.internal_coordinates``):
  * y0 in [-1, 1]^(3N-6): the base variable. Bonds, angles and offset dihedrals have a normal
    prior N(0, (2 prior_std)^2) truncated to [-1, 1] (the truncated normal (0.5, prior_std)
    on [0, 1] of the [0, 1]-scaled coordinates); the free dihedrals are uniform on the circle.
  * the coupling layers map y0 to y in [-1, 1]^(3N-6): rational-quadratic splines on [-1, 1]
    with unit slope at both ends (so that on a free dihedral, where -1 and 1 are the same
    point, the map is a smooth bijection of the circle), conditioned on the other half of the
    coordinates through an MLP that sees a free dihedral as (cos pi y, sin pi y). Layer l
    acts on the free dihedrals rotated by a fixed random offset c_l (mod 2; c_0 = 0), so that
    the spline's fixed point at the seam moves around; the last rotation is undone at the end.
  * x = ``to_cartesian(y)``: Cartesian positions in nm in the canonical frame of the
    Z-matrix, the space of the energy.
All log densities returned here are in x-space, log q(x) = log q_y(y) - log |det dx/dy|, so
that log w = log p~(x) - log q(x) is a Boltzmann importance weight. Configurations the flow
cannot produce (a bounded coordinate outside its interval) have log q = -inf.

At initialisation every spline is the identity, so y = y0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from cmtjax.flows.conditioner import MLPConditioner
from cmtjax.flows.config import FlowConfig
from cmtjax.flows.flow import Flow
from cmtjax.flows.internal_coordinates import InternalCoordinates
from cmtjax.flows.couplings import Coupling, inner_transform, params_per_coordinate

Array = jax.Array
Params = Any

# Coordinates of samples pushed through to_cartesian and back come out up to rounding beyond
# the interval ends; within this tolerance (in y units) they still count as in the support.
SUPPORT_TOL = 1e-3


def _wrap_unit(y: Array) -> Array:
  """Maps to [-1, 1) modulo 2."""
  return jnp.mod(y + 1.0, 2.0) - 1.0


def internal_couplings(config: FlowConfig, ic: InternalCoordinates
                       ) -> tuple[tuple[Coupling, ...], tuple[np.ndarray, ...], np.ndarray]:
  """The coupling layers of the internal-coordinate flow, with the dihedral rotations.

  Layers come in pairs on a random split of the coordinates (sorted halves, one split per
  pair); layer l acts on the free dihedrals rotated by the offset c_l (``shifts[l]`` =
  c_l − c_{l−1} is applied before it), and ``final_shift`` = −c_last undoes the last one.

  Returns:
    ``(layers, shifts, final_shift)``.
  """
  dim = ic.dim
  circular = np.asarray(ic.circular, bool)
  n_params = params_per_coordinate(config)
  transform = inner_transform(dataclasses.replace(config, coupling="spline"), 1.0)

  rng = np.random.RandomState(config.seed_permutation)
  layers, shifts = [], []
  halves = None
  previous_offset = np.zeros(dim)
  for layer in range(config.n_layers):
    if layer % 2 == 0:
      perm = rng.permutation(dim)
      halves = (np.sort(perm[:dim // 2]), np.sort(perm[dim // 2:]))
    cond_idx, trans_idx = halves if layer % 2 == 0 else halves[::-1]
    offset = rng.uniform(-1.0, 1.0, size=dim) if layer > 0 else np.zeros(dim)
    offset = np.where(circular, offset, 0.0)
    shifts.append((offset - previous_offset).astype(np.float32))  # rotation before the layer
    previous_offset = offset
    layers.append(Coupling(
        cond_idx=cond_idx.astype(np.int32), trans_idx=trans_idx.astype(np.int32),
        cond_circular=circular[cond_idx], input_bound=None, n_params=n_params,
        transform=transform,
        net=MLPConditioner(hidden=config.hidden, n_out=len(trans_idx) * n_params,
                           activation=config.activation)))
  final_shift = (-previous_offset).astype(np.float32)  # back to the reference offsets
  return tuple(layers), tuple(shifts), final_shift


def make_internal_flow(config: FlowConfig, ic: InternalCoordinates) -> Flow:
  """Builds the internal-coordinate flow of a molecule.

  Args:
    config: the flow configuration (``n_layers``, ``hidden``, ``n_bins``, ``activation``,
      ``seed_permutation``, ``prior_std`` are used; ``dim`` must be 3N - 6 or 3N).
    ic: the molecule's scaled internal coordinates.

  Returns:
    A ``Flow`` whose samples are Cartesian ``x: [n, 3N]`` and whose log densities are
    Cartesian. ``forward`` / ``inverse`` map between the base variable y0 ``[batch, 3N-6]``
    and x.
  """
  dim = ic.dim
  n_cart = 3 * ic.zmatrix.n_atoms
  if config.dim not in (dim, n_cart):
    raise ValueError(f"FlowConfig.dim={config.dim} does not match the molecule "
                     f"(3N = {n_cart} Cartesian, 3N - 6 = {dim} internal coordinates)")
  circular = np.asarray(ic.circular, bool)
  bounded_mask = jnp.asarray(~circular)
  sigma = 2.0 * float(config.prior_std)  # in y units ([-1, 1] is twice [0, 1])
  log_trunc = math.log(float(ndtr(1.0 / sigma) - ndtr(-1.0 / sigma)))
  layers, shifts, final_shift = internal_couplings(config, ic)

  def rotate(shift: np.ndarray, y: Array, sign: float) -> Array:
    """Rotates the free dihedrals by ``sign * shift`` (mod 2)."""
    if not np.any(shift):
      return y
    return jnp.where(jnp.asarray(circular), _wrap_unit(y + sign * jnp.asarray(shift)), y)

  def _forward_y(params, y0: Array) -> tuple[Array, Array]:
    y, log_det = y0, jnp.zeros(y0.shape[:1], y0.dtype)
    for n, layer in enumerate(layers):
      y, ld = layer.forward(params[f"coupling_{n}"], rotate(shifts[n], y, 1.0))
      log_det = log_det + ld
    return rotate(final_shift, y, 1.0), log_det

  def _inverse_y(params, y: Array) -> tuple[Array, Array]:
    log_det = jnp.zeros(y.shape[:1], y.dtype)
    y = rotate(final_shift, y, -1.0)
    for n in reversed(range(len(layers))):
      y, ld = layers[n].inverse(params[f"coupling_{n}"], y)
      log_det = log_det + ld
      y = rotate(shifts[n], y, -1.0)
    return y, log_det

  def base_log_prob(y0: Array) -> Array:
    inside = jnp.abs(y0) <= 1.0 + SUPPORT_TOL
    yc = jnp.clip(y0, -1.0, 1.0)
    lp_b = (-0.5 * (yc / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
            - log_trunc)
    lp_b = jnp.where(inside, lp_b, -jnp.inf)
    lp = jnp.where(bounded_mask[None], lp_b, -math.log(2.0))
    return jnp.sum(lp, -1)

  def base_sample(key: Array, n: int) -> Array:
    k1, k2 = jax.random.split(key)
    tn = sigma * jax.random.truncated_normal(k1, -1.0 / sigma, 1.0 / sigma, (n, dim))
    un = jax.random.uniform(k2, (n, dim), minval=-1.0, maxval=1.0)
    return jnp.where(bounded_mask[None], tn, un)

  @jax.jit
  def init(key: Array) -> Params:
    keys = jax.random.split(key, len(layers))
    return {f"coupling_{n}": layer.init(keys[n]) for n, layer in enumerate(layers)}

  def _check(x: Array, width: int, name: str) -> None:
    if x.ndim != 2 or x.shape[-1] != width:
      raise ValueError(f"{name} must have shape [batch, {width}], got {tuple(x.shape)}")

  @jax.jit
  def forward(params: Params, z: Array) -> tuple[Array, Array]:
    """Base y0 [batch, 3N-6] -> (x [batch, 3N], log |det dx/dy0| [batch])."""
    _check(z, dim, "z")
    y, ld = _forward_y(params, z)
    x, ld_ic = ic.to_cartesian(y)
    return x, ld + ld_ic

  @jax.jit
  def inverse(params: Params, x: Array) -> tuple[Array, Array]:
    """x [batch, 3N] -> (y0 [batch, 3N-6], log |det dy0/dx| [batch])."""
    _check(x, n_cart, "x")
    y, ld_ic = ic.to_internal(x)
    y0, ld = _inverse_y(params, jnp.clip(y, -1.0 - SUPPORT_TOL, 1.0 + SUPPORT_TOL))
    return y0, ld + ld_ic

  @jax.jit
  def log_prob(params: Params, x: Array) -> Array:
    """Cartesian log q(x) [batch] of x [batch, 3N]; -inf outside the flow's support."""
    _check(x, n_cart, "x")
    y, ld_ic = ic.to_internal(x)
    inside = ic.in_support(y, SUPPORT_TOL)
    y0, ld = _inverse_y(params, jnp.clip(y, -1.0, 1.0))
    return jnp.where(inside, base_log_prob(y0) + ld + ld_ic, -jnp.inf)

  @jax.jit(static_argnames=("n",))
  def sample_and_log_prob(params: Params, key: Array, n: int) -> tuple[Array, Array]:
    """Reparameterised Cartesian samples x [n, 3N] and their Cartesian log q [n]."""
    y0 = base_sample(key, n)
    y, ld = _forward_y(params, y0)
    x, ld_ic = ic.to_cartesian(y)
    return x, base_log_prob(y0) - ld - ld_ic

  def base_wrap(y0: Array) -> Array:
    """Free dihedrals (uniform on [-1, 1), periodic) taken modulo 2 into [-1, 1)."""
    return jnp.where(bounded_mask, y0, jnp.mod(y0 + 1.0, 2.0) - 1.0)

  @jax.jit
  def initial_forward(z: Array) -> tuple[Array, Array]:
    """``forward`` at ``init`` (identity splines; the dihedral rotations cancel modulo 2):
    the internal-coordinate map alone."""
    _check(z, dim, "z")
    return ic.to_cartesian(base_wrap(z))

  @jax.jit
  def initial_log_prob(x: Array) -> Array:
    """``log_prob`` at ``init``: the base density through the internal-coordinate map alone
    (q_0 of CMT's path; no coupling is evaluated)."""
    _check(x, n_cart, "x")
    y, ld_ic = ic.to_internal(x)
    inside = ic.in_support(y, SUPPORT_TOL)
    return jnp.where(inside, base_log_prob(jnp.clip(y, -1.0, 1.0)) + ld_ic, -jnp.inf)

  return Flow(config=config, init=init, sample_and_log_prob=sample_and_log_prob,
              log_prob=log_prob, forward=forward, inverse=inverse,
              base_sample=base_sample, base_log_prob=base_log_prob, base_wrap=base_wrap,
              initial_forward=initial_forward, initial_log_prob=initial_log_prob)
