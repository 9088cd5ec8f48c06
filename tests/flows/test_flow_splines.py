"""The batched rational-quadratic spline against distrax and autodiff."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.flows.splines import (
    RationalQuadraticSpline,
    n_spline_params,
    spline_forward,
    spline_inverse,
    spline_knots,
)

BOX = 3.0


def _ours(p):
  return RationalQuadraticSpline(p, BOX)


def _ref(p):
  return distrax.RationalQuadraticSpline(p, -BOX, BOX, boundary_slopes="identity")


@jax.jit
def _both_ways(params, x):
  """Forward and inverse of both implementations (one compile)."""
  ours, ref = _ours(params), _ref(params)
  y, ld = ours.forward_and_log_det(x)
  y_ref, ld_ref = ref.forward_and_log_det(x)
  xi, ldi = ours.inverse_and_log_det(y_ref)
  xi_ref, ldi_ref = ref.inverse_and_log_det(y_ref)
  knots = (ours.knots.x, ours.knots.y, ours.knots.slope)
  ref_knots = (ref.x_pos, ref.y_pos, ref.knot_slopes)
  return (y, ld, y_ref, ld_ref, xi, ldi, xi_ref, ldi_ref), knots, ref_knots


def test_matches_distrax_knots_forward_and_inverse():
  shape = (256, 3)
  params = jax.random.normal(jax.random.key(0), shape + (n_spline_params(8),))
  # Points inside and outside the box, and the box edges themselves.
  x = 1.5 * BOX * jax.random.uniform(jax.random.key(1), shape, minval=-1, maxval=1)
  x = x.at[0].set(jnp.array([-BOX, BOX, 0.0]))
  values, knots, ref_knots = _both_ways(params, x)
  y, ld, y_ref, ld_ref, xi, ldi, xi_ref, ldi_ref = map(np.asarray, values)
  for ours, ref in zip(knots, ref_knots):
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=2e-6)
  np.testing.assert_allclose(y, y_ref, atol=2e-5)
  np.testing.assert_allclose(ld, ld_ref, atol=2e-4)
  # Where the spline is flat the inverse is ill-conditioned in float32 (for
  # both implementations): compare errors mapped back to y units, |dx| * f'(x).
  slope = np.exp(ld_ref)
  assert np.max(np.abs(xi - np.asarray(x)) * slope) < 2e-5
  assert np.max(np.abs(xi - xi_ref) * slope) < 2e-5
  np.testing.assert_allclose(ldi, ldi_ref, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(ldi, -ld_ref, rtol=1e-3, atol=1e-3)
  # Identity with log-det 0 outside the box.
  outside = np.abs(np.asarray(x)) >= BOX
  assert outside.sum() > 100
  np.testing.assert_array_equal(y[outside], np.asarray(x)[outside])
  np.testing.assert_array_equal(ld[outside], 0.0)


@jax.jit
def _log_det_and_derivative(params, x):
  _, ld = _ours(params).forward_and_log_det(x)
  # The spline is elementwise: d/dx of sum(f(x)) is the vector of f'(x).
  dydx = jax.grad(lambda xs: jnp.sum(_ours(params).forward_and_log_det(xs)[0]))(x)
  return ld, dydx


def test_log_det_is_log_derivative():
  params = jax.random.normal(jax.random.key(2), (200, n_spline_params(8)))
  x = jnp.linspace(-1.2 * BOX, 1.2 * BOX, 200)
  ld, dydx = _log_det_and_derivative(params, x)
  np.testing.assert_allclose(ld, jnp.log(dydx), atol=1e-4)


def test_zero_params_is_identity():
  params = jnp.zeros((5, n_spline_params(16)))
  x = jnp.array([-7.0, -2.9, 0.1234, 2.5, 3.0])
  y, ld = jax.jit(lambda p, xs: _ours(p).forward_and_log_det(xs))(params, x)
  np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ld, 0.0, atol=1e-6)


@pytest.mark.parametrize("direction", ["forward_and_log_det", "inverse_and_log_det"])
def test_far_outside_is_identity_with_finite_gradients(direction):
  params = 2.0 * jax.random.normal(jax.random.key(3), (6, n_spline_params(8)))
  x = jnp.array([-1e4, -1e3, 1e3, 1e4, 3e4, -BOX])

  def apply(p, xs):
    return getattr(_ours(p), direction)(xs)

  def loss(p, xs):
    y, ld = apply(p, xs)
    return jnp.sum(y) + jnp.sum(ld)

  (y, ld), (gp, gx) = jax.jit(
      lambda p, xs: (apply(p, xs), jax.grad(loss, argnums=(0, 1))(p, xs)))(params, x)
  np.testing.assert_array_equal(y, x)
  np.testing.assert_array_equal(ld, 0.0)
  assert np.all(np.isfinite(gp)) and np.all(np.isfinite(gx))
  np.testing.assert_allclose(gx, 1.0, atol=1e-6)


def _reference(params, x, direction, box, **mins):
  """The knot-table evaluation (plain autodiff) of the same splines."""
  knots = spline_knots(params, box, **mins)
  return (spline_forward if direction == "forward_and_log_det" else spline_inverse)(
      x, knots, box)


@pytest.mark.parametrize("direction", ["forward_and_log_det", "inverse_and_log_det"])
@pytest.mark.parametrize("n_bins,mins", [(8, {}), (5, {"min_bin_size": 1e-2,
                                                       "min_knot_slope": 1e-2})])
def test_fast_path_values_and_gradients_match_the_knot_table(direction, n_bins, mins):
  # float64, so that the comparison is of the functions, not of rounding.
  with jax.enable_x64(True):
    params = 1.5 * jax.random.normal(jax.random.key(5), (300, n_spline_params(n_bins)),
                                     jnp.float64)
    x = 1.3 * BOX * jax.random.uniform(jax.random.key(6), (300,), jnp.float64, -1, 1)
    x = x.at[:4].set(jnp.array([-BOX, BOX, 0.0, 1e3]))
    # A loss that weighs outputs and log-dets differently, so that both cotangents count.
    weights = jax.random.normal(jax.random.key(7), (2, 300), jnp.float64)

    def loss(fn):
      def f(p, xs):
        out, ld = fn(p, xs)
        return jnp.sum(weights[0] * jnp.sin(out)) + jnp.sum(weights[1] * ld)
      return f

    fast = lambda p, xs: getattr(RationalQuadraticSpline(p, BOX, **mins), direction)(xs)  # noqa: E731
    ref = lambda p, xs: _reference(p, xs, direction, BOX, **mins)  # noqa: E731
    for a, b in zip(fast(params, x), ref(params, x)):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    g_fast = jax.grad(loss(fast), argnums=(0, 1))(params, x)
    g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
    for a, b in zip(g_fast, g_ref):
      assert np.all(np.isfinite(a))
      np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9)


def test_fast_path_broadcasts_params_against_inputs():
  params = jax.random.normal(jax.random.key(8), (3, n_spline_params(8)))
  x = jax.random.uniform(jax.random.key(9), (4, 3), minval=-BOX, maxval=BOX)
  y, ld = RationalQuadraticSpline(params, BOX).forward_and_log_det(x)
  y_ref, ld_ref = _reference(jnp.broadcast_to(params, (4, 3, params.shape[-1])), x,
                             "forward_and_log_det", BOX)
  np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ld, ld_ref, rtol=1e-5, atol=1e-5)
  g = jax.grad(lambda p: jnp.sum(RationalQuadraticSpline(p, BOX).forward_and_log_det(x)[1]))(
      params)
  assert g.shape == params.shape


@pytest.mark.parametrize("on_y", [False, True])
def test_closed_form_bin_gradient_is_autodiff_of_the_bin_formula(on_y):
  # The backward pass of the fast path differentiates one bin's formula by hand from the
  # bin coordinate xi; in float64 it must be autodiff of the formula itself, for every
  # argument, including steep and flat knot slopes and narrow bins.
  from cmtjax.flows import splines
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    n = 500
    x_lo, y_lo = rng.uniform(-1, 0, n), rng.uniform(-1, 0, n)
    width, height = 10.0 ** rng.uniform(-3, 0, n), 10.0 ** rng.uniform(-3, 0, n)
    d_lo, d_hi = 10.0 ** rng.uniform(-3, 2, n), 10.0 ** rng.uniform(-3, 2, n)
    frac = rng.uniform(0.001, 0.999, n)
    value = y_lo + height * frac if on_y else x_lo + width * frac
    args = tuple(jnp.asarray(a) for a in (value, x_lo, width, y_lo, height, d_lo, d_hi))
    formula = splines._bin_inverse if on_y else splines._bin_forward
    g_out, g_log_det = jnp.asarray(rng.normal(size=n)), jnp.asarray(rng.normal(size=n))
    expected = jax.vjp(formula, *args)[1]((g_out, g_log_det))
    xi = (splines._bin_inverse_xi if on_y else splines._bin_forward_xi)(*args)[2]
    got = splines._bin_vjp(on_y, xi, args[1:], g_out, g_log_det)
    names = ("value", "x_lo", "width", "y_lo", "height", "d_lo", "d_hi")
    for name, a, b in zip(names, got, expected):
      np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9, err_msg=name)
