"""The 2-D double well and the exact 1-D machinery the many-well target shares.

One copy has the unnormalised log density

    log p̃(x1, x2) = -(c x1⁴ + b x1² + a x1) - x2² / 2,    a = -0.5, b = -6, c = 1,

so x1 has two wells (minima near ±√3, the right one deeper because of the tilt a) and
x2 ~ N(0, 1). Everything about the 1-D factor exp(-E(x1)) is computed once, in float64 on the
host: its normaliser Z_1d and the mass of each well by adaptive quadrature, and a
piecewise-constant envelope for exact rejection sampling.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, optimize

from cmtjax.targets.base import Target

Array = jax.Array

# Energy of the 1-D factor: E(x) = C x⁴ + B x² + A x.
A, B, C = -0.5, -6.0, 1.0
# The envelope covers [-_L, _L]; outside it exp(-E) / Z_1d < 1e-60 (far below float32).
_L = 4.0
_N_CELLS = 8192
_MAX_ROUNDS = 64


def energy_1d(x):
  """E(x1) = C x1⁴ + B x1² + A x1 (works on numpy and jax arrays)."""
  return C * x**4 + B * x**2 + A * x


def _denergy_1d(x):
  return 4.0 * C * x**3 + 2.0 * B * x + A


@dataclasses.dataclass(frozen=True)
class DoubleWell1D:
  """Host-side facts about p_1d(x) ∝ exp(-E(x)).

  Attributes:
    log_Z: log ∫ exp(-E(x)) dx.
    barrier: position of the local maximum of exp(-E) between the wells.
    minima: (left, right) positions of the two minima of E.
    left_prob, right_prob: probability of x < barrier and x > barrier.
    mean, second_moment: E[x], E[x²] under p_1d.
  """

  log_Z: float
  barrier: float
  minima: tuple[float, float]
  left_prob: float
  right_prob: float
  mean: float
  second_moment: float


def _quad(f, lo, hi):
  val, _ = integrate.quad(f, lo, hi, epsabs=0.0, epsrel=1e-13, limit=400)
  return val


@functools.lru_cache(maxsize=None)
def double_well_1d() -> DoubleWell1D:
  """Computes the facts of :class:`DoubleWell1D` by adaptive quadrature in float64."""
  # E'(x) = 4x³ - 12x - 0.5 has three real roots: two minima and the barrier near 0.
  barrier = optimize.brentq(_denergy_1d, -0.5, 0.5, xtol=1e-15)
  left = optimize.brentq(_denergy_1d, -3.0, -0.5, xtol=1e-15)
  right = optimize.brentq(_denergy_1d, 0.5, 3.0, xtol=1e-15)
  shift = -energy_1d(right)  # subtract the largest log density for stable exponentials
  dens = lambda x: np.exp(-energy_1d(x) - shift)
  z_left = _quad(dens, -np.inf, barrier)
  z_right = _quad(dens, barrier, np.inf)
  z = z_left + z_right
  m1 = (_quad(lambda x: x * dens(x), -np.inf, barrier)
        + _quad(lambda x: x * dens(x), barrier, np.inf)) / z
  m2 = (_quad(lambda x: x * x * dens(x), -np.inf, barrier)
        + _quad(lambda x: x * x * dens(x), barrier, np.inf)) / z
  return DoubleWell1D(
      log_Z=float(math.log(z) + shift),
      barrier=float(barrier),
      minima=(float(left), float(right)),
      left_prob=float(z_left / z),
      right_prob=float(z_right / z),
      mean=float(m1),
      second_moment=float(m2),
  )


@functools.lru_cache(maxsize=None)
def _envelope():
  """A piecewise-constant envelope M_c ≥ exp(-E) on _N_CELLS cells covering [-_L, _L].

  On a cell [a, b] of width h, -E(x) ≤ max(-E(a), -E(b)) + h/2 · max|E'| (Lipschitz bound),
  and max|E'| on the cell is attained at an endpoint or at an inflection point x = ±1 (E'' = 0)
  inside it.

  Returns:
    (lo, h, cdf, log_m): left edge, cell width, ``[_N_CELLS]`` float32 CDF of the cell index
    under the envelope, ``[_N_CELLS]`` float32 log M_c.
  """
  edges = np.linspace(-_L, _L, _N_CELLS + 1)
  h = edges[1] - edges[0]
  a, b = edges[:-1], edges[1:]
  lip = np.maximum(np.abs(_denergy_1d(a)), np.abs(_denergy_1d(b)))
  for x_infl in (-1.0, 1.0):
    inside = (a <= x_infl) & (x_infl <= b)
    lip = np.where(inside, np.maximum(lip, abs(_denergy_1d(x_infl))), lip)
  log_m = np.maximum(-energy_1d(a), -energy_1d(b)) + 0.5 * h * lip + 1e-6
  p = np.exp(log_m - log_m.max())
  cdf = np.cumsum(p) / p.sum()
  cdf[-1] = 1.0
  return float(-_L), float(h), jnp.asarray(cdf, jnp.float32), jnp.asarray(log_m, jnp.float32)


def make_sampler_1d():
  """Returns ``sample_1d(key, shape) -> x``, exact samples of p_1d(x) ∝ exp(-E(x)).

  Rejection sampling from the piecewise-constant envelope of :func:`_envelope`: draw a cell
  by inverse CDF (float32; the cell probabilities are resolved to ~1e-7), a uniform point in
  it, and accept with probability exp(-E(x) - log M_c) (≥ 0.9, near 1 in the wells). Rejected
  entries are redrawn inside a ``lax.while_loop`` until all are accepted (at most
  ``_MAX_ROUNDS`` rounds; the chance that any of 1e9 draws needs more is below 1e-50).
  Truncation to [-4, 4] drops a mass below 1e-35.
  """
  lo, h, cdf, log_m = _envelope()

  def propose(key, shape):
    k_cell, k_pos, k_acc = jax.random.split(key, 3)
    cell = jnp.searchsorted(cdf, jax.random.uniform(k_cell, shape), side="right")
    cell = jnp.minimum(cell, _N_CELLS - 1)
    x = lo + h * (cell.astype(jnp.float32) + jax.random.uniform(k_pos, shape))
    log_accept = -energy_1d(x) - log_m[cell]
    accept = jnp.log(jax.random.uniform(k_acc, shape)) < log_accept
    return x, accept

  def sample_1d(key: Array, shape: tuple[int, ...]) -> Array:
    key, k0 = jax.random.split(key)
    x, done = propose(k0, shape)

    def cond(state):
      _, _, done, it = state
      return jnp.logical_and(~jnp.all(done), it < _MAX_ROUNDS)

    def body(state):
      key, x, done, it = state
      key, k = jax.random.split(key)
      x_new, acc = propose(k, shape)
      take = ~done & acc
      return key, jnp.where(take, x_new, x), done | take, it + 1

    _, x, _, _ = jax.lax.while_loop(cond, body, (key, x, done, 0))
    return x

  return sample_1d


def double_well(name: str = "double_well2d") -> Target:
  """The 2-D double well: log p̃(x) = -E(x1) - x2²/2 (see the module docstring).

  Args:
    name: registry name.

  Returns:
    A :class:`Target` with dim 2, ``log_Z = log Z_1d + ½ log 2π`` (quadrature), exact
    ``sample``, two modes (left/right well of x1, centred at the minima with x2 = 0, weighted
    by the quadrature masses of the wells) and ``assign_modes`` = 1 where x1 > barrier.
    ``info`` holds ``well_boundary`` and ``right_well_prob`` for
    :func:`cmtjax.metrics.well_occupancy_tv`.
  """
  facts = double_well_1d()
  sample_1d = make_sampler_1d()

  def log_prob(x: Array) -> Array:
    """log p̃(x). x: [batch, 2] -> [batch]."""
    chex.assert_rank(x, 2)
    chex.assert_axis_dimension(x, 1, 2)
    return -energy_1d(x[:, 0]) - 0.5 * x[:, 1] ** 2

  def sample(key: Array, n: int) -> Array:
    """Exact samples [n, 2]."""
    k1, k2 = jax.random.split(key)
    return jnp.stack([sample_1d(k1, (n,)), jax.random.normal(k2, (n,))], axis=-1)

  def assign_modes(x: Array) -> Array:
    """0 for the left well, 1 for the right well. x: [batch, 2] -> [batch] int32."""
    chex.assert_rank(x, 2)
    return (x[:, 0] > facts.barrier).astype(jnp.int32)

  return Target(
      name=name,
      dim=2,
      log_prob=jax.jit(log_prob),
      log_Z=facts.log_Z + 0.5 * math.log(2.0 * math.pi),
      sample=jax.jit(sample, static_argnums=1),
      mode_centres=jnp.array([[facts.minima[0], 0.0], [facts.minima[1], 0.0]]),
      mode_weights=jnp.array([facts.left_prob, facts.right_prob]),
      assign_modes=jax.jit(assign_modes),
      plot_bounds=(-3.0, 3.0),
      info={
          "family": "double_well",
          "energy": "E(x1) = x1^4 - 6 x1^2 - 0.5 x1; log p(x) = -E(x1) - x2^2/2",
          "n_copies": 1,
          "well_boundary": facts.barrier,
          "right_well_prob": facts.right_prob,
          "log_Z_1d": facts.log_Z,
      },
  )
