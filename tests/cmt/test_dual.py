"""The CMT dual: gradient and Hessian identities, closed forms, the erratum's sign trap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from cmtjax.cmt import (dual_stats, dual_value, lam_for_min_ess, make_buffer,
                        normalised_log_weights)
from cmtjax.cmt.dual import capped_log_weights


def _gauss_buffer(n, mu=1.5, s0=2.0, sp=0.7, seed=0, dtype=np.float64):
  """q_i = N(0, s0²) in 1-D (stored as [n, 1]), p̃ = unnormalised N(mu, sp²) (+3 offset)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 1)) * s0
  lq = -0.5 * (x[:, 0] / s0) ** 2 - np.log(s0) - 0.5 * np.log(2 * np.pi)
  lp = -0.5 * ((x[:, 0] - mu) / sp) ** 2 + 3.0
  return make_buffer(jnp.asarray(x, dtype), jnp.asarray(lq, dtype), jnp.asarray(lp, dtype))


@pytest.mark.parametrize("lam,eta", [(0.0, 0.0), (0.5, 0.2), (3.0, 0.0), (0.0, 2.0), (20.0, 7.0)])
def test_gradient_and_hessian_match_finite_differences(lam, eta):
  with enable_x64(True):
    buf = _gauss_buffer(4000)
    eps_tr, eps_ent = 0.3, 0.4
    st = dual_stats(buf, jnp.float64(lam), jnp.float64(eta), eps_tr, eps_ent)
    g = lambda v: dual_value(buf, v[0], v[1], eps_tr, eps_ent)  # noqa: E731
    v = jnp.array([lam, eta], jnp.float64)
    h = 1e-5
    fd = np.array([(g(v + h * e) - g(v - h * e)) / (2 * h) for e in np.eye(2)])
    np.testing.assert_allclose(np.asarray(st.grad), fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(st.value), float(g(v)), rtol=1e-12)
    # Hessian identity −Cov_w̄/s against autodiff of the definition.
    hess_ad = jax.hessian(g)(v)
    np.testing.assert_allclose(np.asarray(st.hess), np.asarray(hess_ad), rtol=1e-6, atol=1e-9)
    # Concavity: the Hessian is negative semi-definite.
    assert np.all(np.linalg.eigvalsh(np.asarray(st.hess)) <= 1e-12)


def test_weights_normalise_and_identities():
  with enable_x64(True):
    buf = _gauss_buffer(3000, seed=3)
    lam, eta = jnp.float64(1.3), jnp.float64(0.4)
    lwb = normalised_log_weights(buf, lam, eta)
    w = np.exp(np.asarray(lwb))
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
    st = dual_stats(buf, lam, eta, 0.1, 0.1)
    n = buf.x.shape[0]
    kl = float(np.sum(w * np.log(n * w)))
    lq = np.asarray(buf.log_q)
    h_i = -lq.mean()
    h_next = -np.sum(w * (lq + np.log(n * w)))
    np.testing.assert_allclose(float(st.kl), kl, rtol=1e-10)
    np.testing.assert_allclose(float(st.entropy_drop), h_i - h_next, rtol=1e-10)
    np.testing.assert_allclose(float(st.ess), 1.0 / (n * np.sum(w ** 2)), rtol=1e-10)


def test_gaussian_closed_form_kl_and_entropy():
  """q_{i+1} ∝ q_i^{λ/s} p̃^{1/s} of two Gaussians is Gaussian: KL and entropy in closed form."""
  mu, s0, sp = 1.5, 2.0, 0.7
  lam, eta = 1.0, 0.5
  s = 1 + lam + eta
  a, b = lam / s, 1 / s
  prec = a / s0 ** 2 + b / sp ** 2
  m1, v1 = (b * mu / sp ** 2) / prec, 1 / prec
  kl_exact = 0.5 * (v1 / s0 ** 2 + m1 ** 2 / s0 ** 2 - 1 + np.log(s0 ** 2 / v1))
  drop_exact = 0.5 * np.log(s0 ** 2 / v1)
  with enable_x64(True):
    buf = _gauss_buffer(400_000, mu=mu, s0=s0, sp=sp, seed=1)
    st = dual_stats(buf, jnp.float64(lam), jnp.float64(eta), 0.3, 0.3)
  # Monte-Carlo error of self-normalised estimates with 4e5 samples: ~1e-2 at most here.
  assert abs(float(st.kl) - kl_exact) < 0.02, (float(st.kl), kl_exact)
  assert abs(float(st.entropy_drop) - drop_exact) < 0.02, (float(st.entropy_drop), drop_exact)


def test_masked_entries_are_ignored():
  buf = _gauss_buffer(1000, dtype=np.float32)
  x = np.asarray(buf.x).copy()
  lq = np.asarray(buf.log_q).copy()
  lp = np.asarray(buf.log_p).copy()
  x2 = np.concatenate([x, [[np.nan], [0.0], [1.0]]])
  lq2 = np.concatenate([lq, [0.0, np.inf, -1.0]]).astype(np.float32)
  lp2 = np.concatenate([lp, [0.0, 0.0, np.nan]]).astype(np.float32)
  bad = make_buffer(jnp.asarray(x2), jnp.asarray(lq2), jnp.asarray(lp2))
  assert int(bad.n_invalid) == 3
  a = dual_stats(buf, jnp.float32(0.7), jnp.float32(0.3), 0.2, 0.2)
  b = dual_stats(bad, jnp.float32(0.7), jnp.float32(0.3), 0.2, 0.2)
  for u, v in zip(a, b):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(np.asarray(b.hess)))


@pytest.mark.parametrize("offset", [1000.0, -1000.0])
def test_a_constant_in_log_p_leaves_the_float32_dual_unchanged(offset):
  """Molecules have log p̃ ≈ −1000: weights, KL, entropy drop and the solver's verdict must
  not move when a constant is added (beyond the rounding of the shifted input itself)."""
  from cmtjax.cmt import solve_dual
  buf = _gauss_buffer(20_000, dtype=np.float32)
  shifted = buf._replace(log_p=buf.log_p + jnp.float32(offset))
  # The shifted input is itself rounded to float32 (ulp(1000) = 6e-5): compare with the
  # float64 figures of the same rounded numbers.
  for lam, eta in [(1.0, 0.5), (5.0, 0.1), (0.0, 0.0)]:
    a = dual_stats(buf, jnp.float32(lam), jnp.float32(eta), 0.3, 0.02)
    b = dual_stats(shifted, jnp.float32(lam), jnp.float32(eta), 0.3, 0.02)
    with enable_x64(True):
      b64 = dual_stats(jax.tree.map(lambda v: jnp.asarray(v, v.dtype if v.dtype == bool
                                                           else jnp.float64), shifted),
                       jnp.float64(lam), jnp.float64(eta), 0.3, 0.02)
    for name in ("kl", "entropy_drop", "ess"):
      assert float(getattr(b, name)) == pytest.approx(float(getattr(b64, name)), abs=2e-6), name
      assert float(getattr(b, name)) == pytest.approx(float(getattr(a, name)), abs=5e-5), name
    assert float(b.log_z) == pytest.approx(float(a.log_z) + offset / (1 + lam + eta), abs=1e-3)
    np.testing.assert_allclose(np.exp(np.asarray(normalised_log_weights(shifted, lam, eta))),
                               np.exp(np.asarray(normalised_log_weights(buf, lam, eta))),
                               atol=1e-8, rtol=2e-4)
  sa = solve_dual(buf, 0.3, 0.02, jnp.float32(1.0), jnp.float32(1.0))
  sb = solve_dual(shifted, 0.3, 0.02, jnp.float32(1.0), jnp.float32(1.0))
  assert bool(sa.converged) and bool(sb.converged)
  assert float(sb.lam) == pytest.approx(float(sa.lam), rel=2e-3)
  assert float(sb.eta) == pytest.approx(float(sa.eta), rel=2e-3, abs=1e-4)


@pytest.mark.parametrize("lam,eta", [(0.0, 0.0), (0.4, 0.0), (0.2, 0.7)])
def test_lam_for_min_ess_is_the_smallest_lambda_that_keeps_the_floor(lam, eta):
  """Heavy weights (q_i broad, p̃ narrow and off-centre): λ' ≥ λ brings the step ESS up to the
  floor and no further; a floor already met, or a buffer without valid entries, keeps λ."""
  buf = _gauss_buffer(20_000, mu=3.0, s0=2.0, sp=0.3, seed=5, dtype=np.float32)
  lam, eta = jnp.float32(lam), jnp.float32(eta)
  ess0 = float(dual_stats(buf, lam, eta, 0.3, 0.3).ess)
  assert ess0 < 0.2
  for floor in (0.3, 0.6):
    lam2 = lam_for_min_ess(buf, lam, eta, floor)
    assert float(lam2) > float(lam)
    assert floor - 1e-5 <= float(dual_stats(buf, lam2, eta, 0.3, 0.3).ess) < floor + 1e-3
    # a slightly smaller λ' would not keep it
    assert float(dual_stats(buf, 0.99 * lam2 + 0.01 * lam, eta, 0.3, 0.3).ess) < floor
  assert float(lam_for_min_ess(buf, lam, eta, 0.5 * ess0)) == float(lam)
  empty = buf._replace(valid=jnp.zeros_like(buf.valid))
  assert float(lam_for_min_ess(empty, lam, eta, 0.5)) == float(lam)


def test_capped_weights_truncate_at_the_cap_and_renormalise():
  """min(w̄, cap/n) over the finite entries, normalised again; below the cap the ratios
  between weights are kept, dropped entries stay dropped, and a cap above the largest weight
  changes nothing."""
  with enable_x64(True):
    rng = np.random.default_rng(0)
    lw = rng.standard_cauchy(1000) * 2.0  # heavy-tailed: a few entries hold most weight
    lw[:10] = -np.inf
    lwb = jnp.asarray(lw - np.logaddexp.reduce(lw[10:]))
    w = np.exp(np.asarray(lwb))
    n, cap = 990, 20.0
    got = np.exp(np.asarray(capped_log_weights(lwb, cap)))
    want = np.minimum(w, cap / n)
    want /= want.sum()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)
    assert np.all(got[:10] == 0) and (w > cap / n).sum() > 0
    assert got.max() <= cap / n / np.minimum(w, cap / n).sum() * (1 + 1e-12)
    same = np.exp(np.asarray(capped_log_weights(lwb, 2.0 * n * w.max())))
    np.testing.assert_allclose(same, w, rtol=1e-12)
