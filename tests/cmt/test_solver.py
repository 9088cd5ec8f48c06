"""The jitted dual solver against scipy's L-BFGS-B, KKT conditions, paths and edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax import enable_x64

from cmtjax.cmt import (SolverConfig, dual_stats, init_path, make_buffer, path_constraints,
                        solve_dual, update_path)


def _random_problem(seed, n=4000, d=3, dtype=np.float64):
  """q_i = N(0, s0² I); p̃ = asymmetric two-component mixture with a random offset."""
  rng = np.random.default_rng(seed)
  s0 = rng.uniform(1.0, 4.0)
  x = rng.normal(size=(n, d)) * s0
  lq = -0.5 * np.sum((x / s0) ** 2, 1) - d * np.log(s0) - 0.5 * d * np.log(2 * np.pi)
  m1, m2 = rng.normal(size=d) * 2, rng.normal(size=d) * 2
  s1, s2 = rng.uniform(0.3, 1.5, size=2)
  l1 = -0.5 * np.sum(((x - m1) / s1) ** 2, 1)
  l2 = -0.5 * np.sum(((x - m2) / s2) ** 2, 1) + np.log(rng.uniform(0.1, 0.9))
  lp = np.logaddexp(l1, l2) + rng.normal() * 5
  return make_buffer(jnp.asarray(x, dtype), jnp.asarray(lq, dtype), jnp.asarray(lp, dtype))


def _scipy_solve(buf, eps_tr, eps_ent, use_tr=True, use_ent=True, sign=+1.0):
  """Reference: maximise g with L-BFGS-B in float64 (sign=-1 reproduces the misprinted dual)."""
  valid = np.asarray(buf.valid)
  lq = np.asarray(buf.log_q, np.float64)[valid]
  lp = np.asarray(buf.log_p, np.float64)[valid]
  n = lq.size
  h = -lq.mean()

  def neg_g(m):
    lam, eta = m
    s = 1 + lam + eta
    lw = (lp - (1 + eta) * lq) / s
    log_z = scipy.special.logsumexp(lw) - np.log(n)
    return -(-s * log_z - lam * eps_tr + sign * eta * (h - eps_ent))

  bounds = [(0, None if use_tr else 0), (0, None if use_ent else 0)]
  res = scipy.optimize.minimize(neg_g, x0=[1.0 * use_tr, 1.0 * use_ent], method="L-BFGS-B",
                                bounds=bounds,
                                options=dict(ftol=1e-15, gtol=1e-11, maxiter=5000))
  return res.x, -res.fun


EPS = [(0.3, 0.5), (0.1, 5.0), (5.0, 0.2), (0.05, 0.05), (1.0, 1.0)]

# One compiled solver per buffer shape and path (ε and warm starts are traced arguments).
_solve = jax.jit(solve_dual, static_argnames=("use_trust_region", "use_entropy", "config"))


@pytest.mark.parametrize("seed", range(6))
def test_solver_matches_scipy_on_random_buffers(seed):
  with enable_x64(True):
    buf = _random_problem(seed)
    for eps_tr, eps_ent in EPS:
      sol = _solve(buf, eps_tr, eps_ent)
      (lam_ref, eta_ref), g_ref = _scipy_solve(buf, eps_tr, eps_ent)
      assert bool(sol.converged)
      # The dual value is flat near the optimum: compare it tightly, multipliers loosely.
      assert float(sol.value) >= g_ref - 1e-7 * max(1.0, abs(g_ref))
      np.testing.assert_allclose([float(sol.lam), float(sol.eta)], [lam_ref, eta_ref],
                                 rtol=2e-3, atol=2e-3 * max(1.0, lam_ref, eta_ref))


@pytest.mark.parametrize("seed", range(4))
def test_float32_solver_is_close_to_float64_reference(seed):
  with enable_x64(True):
    buf64 = _random_problem(seed, n=20_000)
  buf = make_buffer(buf64.x.astype(jnp.float32), buf64.log_q.astype(jnp.float32),
                    buf64.log_p.astype(jnp.float32))
  for eps_tr, eps_ent in EPS[:3]:
    sol = _solve(buf, eps_tr, eps_ent)
    (lam_ref, eta_ref), _ = _scipy_solve(buf64, eps_tr, eps_ent)
    assert bool(sol.converged)
    np.testing.assert_allclose([float(sol.lam), float(sol.eta)], [lam_ref, eta_ref],
                               rtol=1e-2, atol=1e-2 * max(1.0, lam_ref, eta_ref))


@pytest.mark.parametrize("seed", range(4))
def test_kkt_conditions(seed):
  buf = _random_problem(seed, dtype=np.float32)
  for eps_tr, eps_ent in EPS:
    sol = _solve(buf, eps_tr, eps_ent)
    tol = 1e-3
    assert bool(sol.converged)
    if float(sol.lam) > 0:
      assert abs(float(sol.kl) - eps_tr) <= tol * eps_tr
    else:
      assert float(sol.kl) <= eps_tr * (1 + tol)
    if float(sol.eta) > 0:
      assert abs(float(sol.entropy_drop) - eps_ent) <= tol * eps_ent
    else:
      assert float(sol.entropy_drop) <= eps_ent * (1 + tol)


def _narrowing_problem(n=20_000):
  """Broad q_i, narrow asymmetric p̃: the entropy bound must bind."""
  rng = np.random.default_rng(7)
  x = rng.normal(size=(n, 2)) * 3.0
  lq = -0.5 * np.sum((x / 3.0) ** 2, 1) - 2 * np.log(3.0) - np.log(2 * np.pi)
  lp = -0.5 * (((x[:, 0] - 2.0) / 0.3) ** 2 + ((x[:, 1] + 1.0) / 0.6) ** 2)
  return make_buffer(jnp.asarray(x, jnp.float32), jnp.asarray(lq, jnp.float32),
                     jnp.asarray(lp, jnp.float32))


def test_erratum_sign_trap_entropy_constraint_binds():
  """With the correct sign η > 0 and the entropy drop equals ε_ent; the misprinted sign
  (−η(H − ε_ent)) keeps η = 0 and silently breaks the entropy constraint."""
  buf = _narrowing_problem()
  eps_tr, eps_ent = 50.0, 0.2  # trust region inert: only the entropy bound can act
  sol = _solve(buf, eps_tr, eps_ent)
  assert float(sol.eta) > 0.1
  assert abs(float(sol.entropy_drop) - eps_ent) < 1e-3 * eps_ent
  (lam_w, eta_w), _ = _scipy_solve(buf, eps_tr, eps_ent, sign=-1.0)
  assert eta_w < 1e-6
  drop_w = float(dual_stats(buf, jnp.float32(lam_w), jnp.float32(eta_w), eps_tr, eps_ent)
                 .entropy_drop)
  assert drop_w > 3 * eps_ent  # the misprinted dual would violate the bound badly


def test_root_finder_inputs_are_decreasing():
  """∂g/∂λ is decreasing in λ and ∂g/∂η in η: the premise of the bracketed Newton solves."""
  buf = _random_problem(3, dtype=np.float32)
  grid = jnp.exp(jnp.linspace(-8, 8, 60))
  f_lam = jax.vmap(lambda l: dual_stats(buf, l, jnp.float32(0.5), 0.3, 0.5).grad[0])(grid)
  f_eta = jax.vmap(lambda e: dual_stats(buf, jnp.float32(0.5), e, 0.3, 0.5).grad[1])(grid)
  assert np.all(np.diff(np.asarray(f_lam)) <= 1e-5)
  assert np.all(np.diff(np.asarray(f_eta)) <= 1e-5)
  # And the sign convention: at λ → 0 the KL exceeds ε_tr here, at λ → ∞ it vanishes.
  assert float(f_lam[0]) > 0 > float(f_lam[-1])


@pytest.mark.parametrize("path", ["geometric_tempered", "geometric", "tempered", "none"])
def test_paths_fix_the_right_multipliers(path):
  buf = _narrowing_problem(5000)
  use_tr, use_ent = path_constraints(path)
  sol = _solve(buf, 0.3, 0.3, use_trust_region=use_tr, use_entropy=use_ent)
  assert bool(sol.converged)
  assert (float(sol.lam) > 0) == use_tr
  assert (float(sol.eta) > 0) == use_ent
  (lam_ref, eta_ref), _ = _scipy_solve(buf, 0.3, 0.3, use_tr, use_ent)
  np.testing.assert_allclose([float(sol.lam), float(sol.eta)], [lam_ref, eta_ref],
                             rtol=1e-2, atol=1e-3)


def test_unknown_path_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown CMT path 'geo'"):
    path_constraints("geo")


def test_terminates_at_the_target():
  """If q_i = p the constraints are slack at λ = η = 0: the path has reached the target."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5000, 2))
  lq = -0.5 * np.sum(x ** 2, 1) - np.log(2 * np.pi)
  buf = make_buffer(jnp.asarray(x, jnp.float32), jnp.asarray(lq, jnp.float32),
                    jnp.asarray(lq + 4.0, jnp.float32))
  sol = _solve(buf, 0.3, 0.5)
  assert float(sol.lam) == 0.0 and float(sol.eta) == 0.0
  assert bool(sol.converged)
  np.testing.assert_allclose(float(sol.ess), 1.0, atol=1e-6)
  np.testing.assert_allclose(float(sol.log_z), 4.0, atol=1e-5)
  path = update_path(init_path(), sol.lam, sol.eta)
  assert float(path.beta) == 1.0 and float(path.alpha) == 1.0


def test_path_bookkeeping():
  """q_1 ∝ q_0^{λ/s} p̃^{1/s} ⇒ β_1 = (1+η)/s, α_1 = 1/(1+η); q_2 composes exponents."""
  lam, eta = 2.0, 0.5
  s = 1 + lam + eta
  p1 = update_path(init_path(), jnp.float32(lam), jnp.float32(eta))
  np.testing.assert_allclose(float(p1.beta), (1 + eta) / s, rtol=1e-6)
  np.testing.assert_allclose(float(p1.alpha), 1 / (1 + eta), rtol=1e-6)
  # Second step: exponent of q_0 is (λ/s)(λ2/s2), of p̃ is (λ2/s2)(1/s) + 1/s2.
  lam2, eta2 = 1.0, 0.25
  s2 = 1 + lam2 + eta2
  p2 = update_path(p1, jnp.float32(lam2), jnp.float32(eta2))
  e_q0 = (lam / s) * (lam2 / s2)
  e_p = (lam2 / s2) * (1 / s) + 1 / s2
  np.testing.assert_allclose(1 - float(p2.beta), e_q0, rtol=1e-6)
  np.testing.assert_allclose(float(p2.alpha) * float(p2.beta), e_p, rtol=1e-6)


def test_step_ess_when_the_trust_region_binds():
  """While the trust region binds, ESS ≈ 1/(1+2ε_tr) (small ε_tr, Gaussian weights)."""
  buf = _narrowing_problem(50_000)
  for eps_tr in (0.05, 0.1):
    sol = _solve(buf, eps_tr, 100.0)
    assert float(sol.lam) > 0
    np.testing.assert_allclose(float(sol.ess), 1 / (1 + 2 * eps_tr), atol=0.03)


def test_vmapped_over_buffers_and_warm_start():
  bufs = [_random_problem(s, n=2000, dtype=np.float32) for s in range(4)]
  stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *bufs)
  sols = jax.jit(jax.vmap(lambda b: solve_dual(b, 0.3, 0.5)))(stacked)
  for i, b in enumerate(bufs):
    single = _solve(b, 0.3, 0.5)
    np.testing.assert_allclose(float(sols.lam[i]), float(single.lam), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(sols.eta[i]), float(single.eta), rtol=1e-4, atol=1e-6)
  # A warm start at the solution needs fewer iterations than a cold one.
  b = bufs[0]
  cold = _solve(b, 0.3, 0.5)
  warm = _solve(b, 0.3, 0.5, cold.lam, cold.eta)
  assert int(warm.iterations) <= int(cold.iterations)
  np.testing.assert_allclose(float(warm.lam), float(cold.lam), rtol=1e-3, atol=1e-6)


def test_grid_bracketing_gives_the_same_solution():
  buf = _random_problem(1, dtype=np.float32)
  a = _solve(buf, 0.3, 0.5)
  b = _solve(buf, 0.3, 0.5, config=SolverConfig(n_grid=6))
  np.testing.assert_allclose([float(a.lam), float(a.eta)], [float(b.lam), float(b.eta)],
                             rtol=1e-3, atol=1e-5)
