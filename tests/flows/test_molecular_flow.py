"""The internal-coordinate flow: Cartesian densities, invertibility, periodic dihedrals."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.flows import flow_for_target
from cmtjax.targets import make_target
from cmtjax.targets.molecules import wrong_chirality
from flows_testing import perturbed_init

_KW = dict(n_layers=4, hidden=[32], n_bins=6, seed_permutation=3)


@functools.lru_cache(maxsize=None)
def _target():
  return make_target("aldp")


def test_sample_log_prob_matches_log_prob_and_inverse():
  t = _target()
  flow = flow_for_target(_KW, t)
  params = perturbed_init(flow)
  x, log_q = flow.sample_and_log_prob(params, jax.random.PRNGKey(2), 512)
  assert x.shape == (512, t.dim)
  np.testing.assert_allclose(np.asarray(flow.log_prob(params, x)), np.asarray(log_q),
                             atol=2e-3, rtol=1e-5)
  # The perturbed flow is far from the identity (the prior pushed through the map).
  x_id, _ = flow.forward(flow.init(jax.random.PRNGKey(0)), flow.inverse(params, x)[0])
  assert float(jnp.median(jnp.abs(x_id - x))) > 1e-3
  z, ld_inv = flow.inverse(params, x)
  x2, ld_fwd = flow.forward(params, z)
  np.testing.assert_allclose(np.asarray(x2), np.asarray(x), atol=5e-5)
  np.testing.assert_allclose(np.asarray(ld_inv + ld_fwd), 0.0, atol=2e-3)
  spec = t.molecule
  assert int(jnp.sum(wrong_chirality(x, spec.chiral_centres, spec.chirality))) == 0


def test_flow_log_det_against_autodiff_in_cartesian_space():
  t = _target()
  flow = flow_for_target(_KW, t)
  params = perturbed_init(flow)
  zm = t.molecule.zmatrix
  a1, a2 = int(zm.order[1]), int(zm.order[2])
  idx = np.asarray([3 * a1, 3 * a2, 3 * a2 + 1]
                   + [3 * int(a) + c for a in zm.order[3:] for c in range(3)])
  with jax.enable_x64(True):
    params64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), params)
    z = 0.5 * jax.random.uniform(jax.random.PRNGKey(3), (2, zm.dim), jnp.float64, -1, 1)
    _, log_det = flow.forward(params64, z)
    # One compiled Jacobian for both samples (a fresh trace per sample doubled the time).
    jac = jax.jit(jax.vmap(jax.jacrev(lambda v: flow.forward(params64, v[None])[0][0, idx])))(z)
    np.testing.assert_allclose(np.asarray(jnp.linalg.slogdet(jac)[1]), np.asarray(log_det),
                               rtol=1e-9, atol=1e-7)


def test_initial_flow_is_the_prior_pushed_to_cartesian_space():
  t = _target()
  flow = flow_for_target(dict(_KW, prior_std=0.1), t)
  params = flow.init(jax.random.PRNGKey(0))
  z = jnp.zeros((1, t.molecule.zmatrix.dim))
  x, _ = flow.forward(params, z)
  # y0 = 0 is the reference structure: the energy of the minimum.
  e = float(t.molecule.energy(x)[0])
  e_ref = float(t.molecule.energy(jnp.asarray(t.molecule.positions.reshape(1, -1)))[0])
  assert abs(e - e_ref) < 1e-2
  # Base density: truncated N(0, 0.2^2) per bounded coordinate, 1/2 per free dihedral.
  n_free = int(np.sum(t.molecule.zmatrix.torsion_kind == 0))
  n_bounded = t.molecule.zmatrix.dim - n_free
  from scipy.stats import truncnorm
  expected_base = n_bounded * truncnorm(-5, 5, scale=0.2).logpdf(0.0) - n_free * np.log(2.0)
  _, ld = flow.forward(params, z)
  np.testing.assert_allclose(float(flow.log_prob(params, x)[0]), expected_base - float(ld[0]),
                             rtol=1e-5)


def test_free_dihedrals_are_periodic():
  t = _target()
  flow = flow_for_target(_KW, t)
  params = perturbed_init(flow)
  free = np.flatnonzero(np.concatenate([
      np.zeros(2 * t.molecule.topology.n_atoms - 3, bool),
      t.molecule.zmatrix.torsion_kind == 0]))
  z = 0.3 * jax.random.uniform(jax.random.PRNGKey(4), (1, t.molecule.zmatrix.dim), minval=-1)
  z_lo = z.at[0, free[0]].set(-1.0)
  z_hi = z.at[0, free[0]].set(1.0)
  x_lo, ld_lo = flow.forward(params, z_lo)
  x_hi, ld_hi = flow.forward(params, z_hi)
  R_lo, R_hi = x_lo.reshape(-1, 3), x_hi.reshape(-1, 3)
  d_lo = jnp.linalg.norm(R_lo[:, None] - R_lo[None], axis=-1)
  d_hi = jnp.linalg.norm(R_hi[:, None] - R_hi[None], axis=-1)
  np.testing.assert_allclose(np.asarray(d_lo), np.asarray(d_hi), atol=1e-4)
  np.testing.assert_allclose(float(ld_lo[0]), float(ld_hi[0]), atol=1e-3)


def test_configurations_outside_the_support_have_zero_density():
  t = _target()
  flow = flow_for_target(_KW, t)
  params = flow.init(jax.random.PRNGKey(0))
  x = jnp.asarray(t.molecule.positions.reshape(1, -1), jnp.float32)
  stretched = x.reshape(-1, 3)
  zm = t.molecule.zmatrix
  i, j = int(zm.bond_atom[5]), int(zm.bond_ref[5])
  # Pull one bonded atom (and nothing else) 0.1 nm further out: beyond bond_width = 0.03 nm.
  d = stretched[i] - stretched[j]
  stretched = stretched.at[i].add(0.1 * d / jnp.linalg.norm(d)).reshape(1, -1)
  lq = flow.log_prob(params, jnp.concatenate([x, stretched]))
  assert np.isfinite(float(lq[0])) and float(lq[1]) == -np.inf


def test_internal_coordinates_need_a_molecule():
  with pytest.raises(ValueError, match="molecular target"):
    flow_for_target(dict(coordinates="internal"), make_target("gmm40"))
  with pytest.raises(ValueError, match="coordinates"):
    flow_for_target(dict(coordinates="polar"), make_target("gmm40"))


def test_the_base_space_a_sampler_moves_in():
  """base_sample / base_log_prob / base_wrap: draws lie in the support; wrapping moves only
  the free dihedrals (by whole periods) and maps every point into the support, where the
  flow's sample_and_log_prob and forward agree."""
  t = _target()
  flow = flow_for_target(_KW, t)
  params = perturbed_init(flow)
  z = flow.base_sample(jax.random.PRNGKey(6), 256)
  assert z.shape == (256, t.molecule.zmatrix.dim)
  assert bool(jnp.all(jnp.isfinite(flow.base_log_prob(z))))
  np.testing.assert_array_equal(np.asarray(flow.base_wrap(z)), np.asarray(z))
  circular = np.asarray(flow.base_wrap(jnp.full((1, z.shape[1]), 3.0)))[0] != 3.0
  assert circular.sum() == int(np.sum(t.molecule.zmatrix.torsion_kind == 0))
  shifted = z + 2.0 * jnp.asarray(circular) * jnp.arange(-2, 2)[jax.random.randint(
      jax.random.PRNGKey(7), (256, 1), 0, 4)]
  np.testing.assert_allclose(np.asarray(flow.base_wrap(shifted)), np.asarray(z), atol=1e-5)
  outside = z.at[0, np.flatnonzero(~circular)[0]].set(1.5)
  assert float(flow.base_log_prob(flow.base_wrap(outside))[0]) == -np.inf
  # forward of the base draws is the flow's sampler with the same key.
  x, log_q = flow.sample_and_log_prob(params, jax.random.PRNGKey(6), 256)
  x2, log_det = flow.forward(params, z)
  np.testing.assert_allclose(np.asarray(x2), np.asarray(x), atol=1e-5)
  np.testing.assert_allclose(np.asarray(flow.base_log_prob(z) - log_det), np.asarray(log_q),
                             atol=1e-3)


def test_fast_spline_gives_the_knot_table_flow_samples_log_q_and_fit_gradient(monkeypatch):
  """The flow with the fast spline draws the same samples with the same log q, and has the
  same fit gradient, as with the knot-table evaluation (float32, fixed parameters and key)."""
  from cmtjax.flows import splines

  t = _target()
  flow = flow_for_target(dict(_KW, n_bins=8, hidden=[64, 64]), t)
  params = perturbed_init(flow)
  key = jax.random.PRNGKey(11)

  def run():
    x, log_q = jax.jit(lambda p: flow.sample_and_log_prob(p, key, 256))(params)
    grad = jax.jit(jax.grad(lambda p: -jnp.mean(flow.log_prob(p, x))))(params)
    return x, log_q, grad

  fast = run()

  monkeypatch.setattr(splines.RationalQuadraticSpline, "_run",
                      splines.RationalQuadraticSpline._run_from_knot_table)
  jax.clear_caches()  # the flow's methods are jitted: trace them again with the table
  ref = run()
  jax.clear_caches()
  assert float(jnp.max(jnp.abs(fast[1] - ref[1]))) > 0.0  # two evaluations were compared
  np.testing.assert_allclose(fast[0], ref[0], atol=2e-5)
  np.testing.assert_allclose(fast[1], ref[1], atol=2e-3, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(fast[2]), jax.tree.leaves(ref[2])):
    np.testing.assert_allclose(a, b, atol=2e-3 * float(jnp.max(jnp.abs(b))) + 1e-6)


def test_initial_forward_is_the_flow_at_its_initial_parameters_and_not_after_training():
  """``initial_forward`` (the internal-coordinate map alone, no couplings) equals ``forward``
  at ``init`` on wrapped and unwrapped base points, and differs once the couplings move."""
  t = _target()
  flow = flow_for_target(_KW, t)
  z = flow.base_sample(jax.random.PRNGKey(8), 128)
  circular = np.asarray(flow.base_wrap(jnp.full((1, z.shape[1]), 3.0)))[0] != 3.0
  unwrapped = z + 2.0 * jnp.asarray(circular)  # one period further: the same points
  x, ld = flow.forward(flow.init(jax.random.PRNGKey(0)), z)
  for zz in (z, unwrapped):
    x0, ld0 = flow.initial_forward(zz)
    np.testing.assert_allclose(np.asarray(x0), np.asarray(x), atol=2e-5)
    np.testing.assert_allclose(np.asarray(ld0), np.asarray(ld), atol=1e-4)
  x1, _ = flow.forward(perturbed_init(flow), z)
  assert float(jnp.max(jnp.abs(x1 - x))) > 1e-2


def test_initial_log_prob_is_the_flow_density_at_its_initial_parameters():
  """``initial_log_prob`` (q_0 from the internal-coordinate map alone) equals ``log_prob`` at
  ``init`` on samples of a trained-looking flow, is −inf where ``log_prob`` is, and differs
  from the density of a flow whose couplings moved."""
  t = _target()
  flow = flow_for_target(_KW, t)
  moved = perturbed_init(flow)
  x, _ = flow.sample_and_log_prob(moved, jax.random.PRNGKey(3), 256)
  init = flow.init(jax.random.PRNGKey(0))
  lq0 = np.asarray(flow.initial_log_prob(x))
  np.testing.assert_allclose(lq0, np.asarray(flow.log_prob(init, x)), rtol=1e-5, atol=2e-3)
  assert float(np.max(np.abs(lq0 - np.asarray(flow.log_prob(moved, x))))) > 0.1
  far = x.at[0, 0].add(5.0)  # a bond stretched out of the support
  assert np.isneginf(np.asarray(flow.initial_log_prob(far))[0])
  assert np.isneginf(np.asarray(flow.log_prob(init, far))[0])
