"""CMT's per-step diagnostics on a subsample of the buffer: same training, consistent figures."""

from __future__ import annotations


import jax
import numpy as np
import pytest

from cmtjax.methods.cmt import CMTConfig, make_cmt
from methods_testing import gauss_target, small_flow


def _one_step(diagnostics_samples):
  flow, target = small_flow(), gauss_target()
  cfg = CMTConfig(n_samples=4000, n_grad_steps=20, batch_size=256,
                  diagnostics_samples=diagnostics_samples)
  method = make_cmt(cfg, flow, target, n_steps=5)
  state = method.init(jax.random.PRNGKey(0), flow.init(jax.random.PRNGKey(1)))
  return jax.jit(method.step)(jax.random.PRNGKey(2), state)


def test_diagnostics_subsample_changes_nothing_but_the_diagnostics():
  full_state, full = _one_step(0)      # the whole buffer
  sub_state, sub = _one_step(1000)
  # Training (multipliers, parameters) does not depend on the diagnostics.
  assert float(sub.lam) == float(full.lam) and float(sub.eta) == float(full.eta)
  for p, q in zip(jax.tree.leaves(sub_state.params), jax.tree.leaves(full_state.params)):
    np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
  # A quarter of the buffer estimates the same quantities (loosely: Monte Carlo error).
  for name in ("realised_kl", "realised_entropy_drop", "fit_kl"):
    v, ref = float(getattr(sub, name)), float(getattr(full, name))
    assert np.isfinite(v)
    assert abs(v - ref) < 0.25 + 0.5 * abs(ref), (name, v, ref)


def test_negative_diagnostics_samples_is_rejected():
  with pytest.raises(ValueError, match="diagnostics_samples"):
    CMTConfig(diagnostics_samples=-1)


@pytest.mark.parametrize("n_anneal", [None, 3000])
def test_mode_counts_of_the_buffer_match_a_recount_on_the_host(n_anneal):
  """modes_buffer and sparsest_mode_samples describe the step's own buffer (its first
  N_annealing rows while annealing; padding never counts)."""
  from cmtjax.targets import gmm
  target = gmm(n_modes=6, dim=2, box=6.0, scale=0.5, seed=3)
  flow = small_flow()
  cfg = CMTConfig(n_samples=2000, n_samples_annealing=n_anneal, n_grad_steps=2, batch_size=64)
  method = make_cmt(cfg, flow, target, n_steps=3, max_target_evals=10_000)
  params = flow.init(jax.random.PRNGKey(1))
  state = method.init(jax.random.PRNGKey(0), params)
  key = jax.random.PRNGKey(4)
  _, info = jax.jit(method.step)(key, state)
  n = n_anneal or 2000
  x, _ = flow.sample_and_log_prob(params, jax.random.split(key)[0], n)
  counts = np.bincount(np.asarray(target.assign_modes(x)), minlength=6)
  assert int(info.n_evals) == n
  assert int(info.sparsest_mode_samples) == counts.min()
  assert int(info.modes_buffer) == int(np.sum(counts / n >= 0.25 / 6))
