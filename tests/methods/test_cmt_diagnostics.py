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
  # The weights behind the realised figures: a fraction, high for a fit that moved little.
  assert 0.0 < float(sub.realised_ess) <= 1.0 and float(full.realised_ess) > 0.1


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


def test_phi_basin_shares_of_a_molecular_buffer_match_a_recount_on_the_host():
  """For a molecule, phi_pos_buffer is the buffer's share with backbone φ ≥ 0 per residue and
  phi_pos_weighted the same share under w̄ (recomputed here from the returned multipliers),
  cis_buffer and cis_weighted the same for a cis peptide bond per bond; targets without
  residues report empty arrays (left out of the step records)."""
  from cmtjax.cmt.dual import make_buffer
  from cmtjax.flows import flow_for_target
  from cmtjax.targets import make_target
  from cmtjax.targets.molecules import dihedral_angles
  target = make_target("aldp")
  flow = flow_for_target(dict(n_layers=2, hidden=[16], n_bins=4), target)
  # Parameters moved off the prior so that some samples have φ > 0 and the weights vary.
  params = flow.init(jax.random.PRNGKey(1))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
  params = jax.tree.unflatten(tree, [v + 0.3 * jax.random.normal(k, v.shape)
                                     for k, v in zip(keys, leaves)])
  cfg = CMTConfig(n_samples=1500, n_grad_steps=2, batch_size=64)
  method = make_cmt(cfg, flow, target, n_steps=3)
  state = method.init(jax.random.PRNGKey(0), params)
  key = jax.random.PRNGKey(4)
  _, info = jax.jit(method.step)(key, state)
  x, log_q = flow.sample_and_log_prob(params, jax.random.split(key)[0], 1500)
  buf = make_buffer(x, log_q, target.log_prob(x))
  valid = np.asarray(buf.valid)
  pos = (np.asarray(dihedral_angles(x, target.molecule.phi_idx))[:, 0] >= 0) & valid
  assert 0 < pos.sum() < valid.sum()  # a non-trivial check
  np.testing.assert_allclose(float(info.phi_pos_buffer[0]), pos.sum() / valid.sum(), rtol=1e-6)
  # w̄ ∝ q̂^(1 − β') p̃^(α'β'), the weights of the chosen q_{i+1} on the buffer.
  from cmtjax.cmt.dual import normalised_log_weights
  lw = np.asarray(normalised_log_weights(buf, info.lam, info.eta), np.float64)
  w = np.where(valid, np.exp(lw), 0.0)
  np.testing.assert_allclose(float(info.phi_pos_weighted[0]), np.sum(w * pos) / np.sum(w),
                             rtol=1e-4, atol=1e-7)
  assert info.phi_pos_buffer.shape == (1,) and info.phi_pos_weighted.shape == (1,)
  # Cis peptide bonds (ACE-ALA, ALA-NME), recounted with the metrics' own function.
  from cmtjax.metrics import cis_peptide_bonds
  cis = cis_peptide_bonds(np.asarray(x), target.molecule.topology) & valid[:, None]
  assert cis.shape[1] == 2 and 0 < cis.sum() < valid.sum()  # a non-trivial check
  np.testing.assert_allclose(np.asarray(info.cis_buffer), cis.sum(0) / valid.sum(), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(info.cis_weighted), w @ cis / np.sum(w), rtol=1e-4,
                             atol=1e-7)
  # No residues, no peptide bonds: empty.
  _, plain = _one_step(0)
  assert plain.phi_pos_buffer.shape == (0,) and plain.phi_pos_weighted.shape == (0,)
  assert plain.cis_buffer.shape == (0,) and plain.cis_weighted.shape == (0,)
