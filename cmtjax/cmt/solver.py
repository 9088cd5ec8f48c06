"""A jitted solver for the two-multiplier CMT dual.

The dual g(λ, η) is concave on λ, η ≥ 0 (see :mod:`cmtjax.cmt.dual`). We solve it by nested
one-dimensional root finding, which exploits that structure and needs no host round trip:

  * inner: for fixed η, λ*(η) = 0 if ∂g/∂λ(0, η) ≤ 0, else the root of ∂g/∂λ = KL̂ − ε_tr,
    which is decreasing in λ (concavity);
  * outer: G(η) = max_λ g(λ, η) is concave, and by the envelope theorem
    G'(η) = ∂g/∂η(λ*(η), η), decreasing in η; η* = 0 if G'(0) ≤ 0, else its root, with
    G''(η) = g_ηη − g_λη² / g_λλ where λ* > 0.

Each root is found in log space (u = log λ or log η, so multipliers spanning 1e-10 .. 1e10
are all reachable) by a safeguarded Newton iteration: a bracket [lo, hi] with F(lo) > 0 > F(hi)
is first narrowed by evaluating F on a small grid of candidate multipliers at once (``vmap``),
then Newton steps are taken from the warm start, falling back to bisection whenever a step
leaves the bracket. All loops are ``lax.while_loop``s, so the solver runs inside ``jit`` and can
itself be ``vmap``-ed over many buffers.

The path variants of CMT.md §2 are static switches: ``use_trust_region`` frees λ and
``use_entropy`` frees η; a multiplier that is not freed stays exactly 0.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from cmtjax.cmt.dual import Buffer, dual_stats

Array = jax.Array

# Range of log-multipliers searched: λ, η ∈ [e^-23, e^23] ≈ [1e-10, 1e10].
LOG_MIN = -23.0
LOG_MAX = 23.0


class SolverConfig(NamedTuple):
  """Numerical settings of the dual solver.

  Attributes:
    rtol: a constraint counts as met when |KL̂ − ε_tr| ≤ rtol·ε_tr (and likewise for the
      entropy drop). float32 sums over 1e4..1e6 weights are good to ~1e-6 relative.
    xtol: bracket width in log-multiplier at which a root counts as located.
    max_iter: iteration cap of each one-dimensional solve.
    n_grid: candidate multipliers evaluated at once (vmapped) to bracket each root before
      Newton starts; 0 (default) starts from the warm start within [e^-23, e^23]. A grid
      costs n_grid dual evaluations per root (and per inner solve of the outer grid).
      Measured at N = 1e4 on CPU: 2 ms with 0, 5 ms with 4, 20 ms with 8.
  """

  rtol: float = 1e-4
  xtol: float = 1e-7
  max_iter: int = 60
  n_grid: int = 0


class DualSolution(NamedTuple):
  """Result of a dual solve, with diagnostics.

  Attributes:
    lam: λ* ≥ 0.
    eta: η* ≥ 0.
    kl: achieved KL̂(q_{i+1} ‖ q_i) on the buffer.
    entropy_drop: achieved H(q_i) − Ĥ(q_{i+1}).
    ess: step ESS of the weights w̄ (fraction).
    log_z: log Z(λ*, η*).
    entropy: H(q_i) estimate.
    value: g(λ*, η*).
    grad: ``[2]`` ∂g at the solution (zero in each freed, positive multiplier).
    iterations: total Newton/bisection iterations (inner + outer).
    converged: True when every active constraint is met to tolerance and every inactive one
      is satisfied.
  """

  lam: Array
  eta: Array
  kl: Array
  entropy_drop: Array
  ess: Array
  log_z: Array
  entropy: Array
  value: Array
  grad: Array
  iterations: Array
  converged: Array


class _RootState(NamedTuple):
  u: Array
  lo: Array
  hi: Array
  f: Array
  df: Array
  it: Array
  done: Array
  extra: Array  # iterations spent inside f (for nested solves)


def _solve_decreasing(fn: Callable[[Array], tuple[Array, Array, Array]], u0: Array,
                      ftol: Array, cfg: SolverConfig) -> tuple[Array, Array, Array, Array]:
  """Finds the root of a decreasing F(u) on [LOG_MIN, LOG_MAX] by safeguarded Newton.

  Args:
    fn: ``u -> (F(u), dF/du, inner_iterations)``; F must be decreasing in u.
    u0: warm start.
    ftol: |F| at which to stop.
    cfg: solver settings.

  Returns:
    ``(u, F(u), iterations, converged)``.
  """
  dtype = u0.dtype
  lo = jnp.asarray(LOG_MIN, dtype)
  hi = jnp.asarray(LOG_MAX, dtype)
  extra = jnp.zeros((), jnp.int32)
  if cfg.n_grid > 0:
    # Evaluate F on a grid of candidates at once and keep the sign change.
    grid = jnp.linspace(LOG_MIN, LOG_MAX, cfg.n_grid + 2, dtype=dtype)[1:-1]
    f_grid, _, it_grid = jax.vmap(fn)(grid)
    pos = f_grid > 0
    lo = jnp.max(jnp.where(pos, grid, lo))
    hi = jnp.min(jnp.where(pos, hi, grid))
    extra = extra + jnp.sum(it_grid).astype(jnp.int32)
  u = jnp.clip(u0, lo, hi)
  u = jnp.where((u <= lo) | (u >= hi), 0.5 * (lo + hi), u)
  f, df, it_f = fn(u)
  state = _RootState(u=u, lo=lo, hi=hi, f=f, df=df, it=jnp.zeros((), jnp.int32),
                     done=jnp.abs(f) <= ftol, extra=extra + it_f.astype(jnp.int32))

  def cond(s: _RootState) -> Array:
    return (~s.done) & (s.it < cfg.max_iter)

  def body(s: _RootState) -> _RootState:
    lo = jnp.where(s.f > 0, s.u, s.lo)
    hi = jnp.where(s.f > 0, s.hi, s.u)
    newton = s.u - s.f / s.df
    ok = jnp.isfinite(newton) & (s.df < 0) & (newton > lo) & (newton < hi)
    u = jnp.where(ok, newton, 0.5 * (lo + hi))
    f, df, it_f = fn(u)
    done = (jnp.abs(f) <= ftol) | (hi - lo <= cfg.xtol)
    return _RootState(u=u, lo=lo, hi=hi, f=f, df=df, it=s.it + 1, done=done,
                      extra=s.extra + it_f.astype(jnp.int32))

  s = jax.lax.while_loop(cond, body, state)
  return s.u, s.f, s.it + s.extra, s.done


def solve_dual(buffer: Buffer, eps_tr: float | Array, eps_ent: float | Array,
               lam_init: float | Array = 1.0, eta_init: float | Array = 1.0, *,
               use_trust_region: bool = True, use_entropy: bool = True,
               config: SolverConfig = SolverConfig()) -> DualSolution:
  """Maximises the CMT dual over λ, η ≥ 0.

  Jittable and vmappable (``use_trust_region``, ``use_entropy`` and ``config`` are static).

  Args:
    buffer: the step's buffer of N samples of q_i.
    eps_tr: trust-region bound ε_tr on KL(q_{i+1} ‖ q_i).
    eps_ent: bound ε_ent on the entropy decrease H(q_i) − H(q_{i+1}).
    lam_init: warm start for λ (previous step's value; non-positive values start at 1).
    eta_init: warm start for η.
    use_trust_region: free λ (else λ ≡ 0).
    use_entropy: free η (else η ≡ 0).
    config: numerical settings.

  Returns:
    A :class:`DualSolution`.
  """
  dtype = buffer.log_q.dtype
  eps_tr = jnp.asarray(eps_tr, dtype)
  eps_ent = jnp.asarray(eps_ent, dtype)
  zero = jnp.zeros((), dtype)
  tol_tr = config.rtol * eps_tr
  tol_ent = config.rtol * eps_ent

  def warm(v):
    v = jnp.asarray(v, dtype)
    return jnp.where(v > 0, jnp.log(jnp.where(v > 0, v, 1.0)), 0.0)

  u_lam0 = warm(lam_init)
  v_eta0 = warm(eta_init)

  def inner(eta: Array) -> tuple[Array, Array, Array]:
    """λ*(η), whether the inner solve converged, and its iteration count."""
    if not use_trust_region:
      return zero, jnp.array(True), jnp.zeros((), jnp.int32)
    f0 = dual_stats(buffer, zero, eta, eps_tr, eps_ent).grad[0]

    def fn(u):
      lam = jnp.exp(u)
      st = dual_stats(buffer, lam, eta, eps_tr, eps_ent)
      return st.grad[0], lam * st.hess[0, 0], jnp.zeros((), jnp.int32)

    def solve(_):
      u, _, it, ok = _solve_decreasing(fn, u_lam0, tol_tr, config)
      return jnp.exp(u), ok, it

    def at_zero(_):
      return zero, jnp.array(True), jnp.zeros((), jnp.int32)

    return jax.lax.cond(f0 > tol_tr, solve, at_zero, None)

  if use_entropy:
    def outer_fn(v):
      eta = jnp.exp(v)
      lam, _, it = inner(eta)
      st = dual_stats(buffer, lam, eta, eps_tr, eps_ent)
      h = st.hess
      safe_hll = jnp.where(h[0, 0] < 0, h[0, 0], -1.0)
      curv = jnp.where(lam > 0, h[1, 1] - h[0, 1] ** 2 / safe_hll, h[1, 1])
      return st.grad[1], eta * curv, it

    lam0, _, it0 = inner(zero)
    g0 = dual_stats(buffer, lam0, zero, eps_tr, eps_ent).grad[1]

    def solve_eta(_):
      v, _, it, ok = _solve_decreasing(outer_fn, v_eta0, tol_ent, config)
      return jnp.exp(v), ok, it

    def eta_zero(_):
      return zero, jnp.array(True), jnp.zeros((), jnp.int32)

    eta, ok_eta, it_eta = jax.lax.cond(g0 > tol_ent, solve_eta, eta_zero, None)
  else:
    eta, ok_eta, it_eta, it0 = zero, jnp.array(True), jnp.zeros((), jnp.int32), \
        jnp.zeros((), jnp.int32)

  lam, ok_lam, it_lam = inner(eta)
  st = dual_stats(buffer, lam, eta, eps_tr, eps_ent)
  # KKT check at the solution: each freed multiplier is either positive with its constraint
  # tight, or zero with its constraint satisfied.
  kkt_tr = jnp.where(lam > 0, jnp.abs(st.grad[0]) <= 10 * tol_tr, st.grad[0] <= 10 * tol_tr)
  kkt_ent = jnp.where(eta > 0, jnp.abs(st.grad[1]) <= 10 * tol_ent,
                      st.grad[1] <= 10 * tol_ent)
  if not use_trust_region:
    kkt_tr = jnp.array(True)
  if not use_entropy:
    kkt_ent = jnp.array(True)
  converged = ok_lam & ok_eta & kkt_tr & kkt_ent
  return DualSolution(lam=lam, eta=eta, kl=st.kl, entropy_drop=st.entropy_drop, ess=st.ess,
                      log_z=st.log_z, entropy=st.entropy, value=st.value, grad=st.grad,
                      iterations=(it0 + it_eta + it_lam).astype(jnp.int32),
                      converged=converged)
