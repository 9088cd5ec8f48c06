"""The molecular report with and without reference samples (a stand-in sampler, no training)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.io.molecular_report import molecular_report
from cmtjax.targets import make_target


def _jitter_sampler(target, scale=2e-3):
  x0 = jnp.asarray(target.molecule.positions.reshape(1, -1), jnp.float32)

  def sample_and_log_prob(key, n):
    return x0 + scale * jax.random.normal(key, (n, x0.shape[1])), jnp.zeros((n,))

  return sample_and_log_prob


def test_report_without_reference_set(tmp_path, monkeypatch):
  # No reference set anywhere: neither the cache nor a shipped one.
  from cmtjax.targets.molecules import reference
  monkeypatch.setenv("CMTJAX_DATA", str(tmp_path / "empty"))
  monkeypatch.setattr(reference, "shipped_reference_path",
                      lambda name: str(tmp_path / "none" / f"{name}_reference.npz"))
  target = make_target("ala6")
  figs = molecular_report(target, _jitter_sampler(target), lambda x: jnp.zeros(x.shape[:1]),
                          jax.random.PRNGKey(0), 64, str(tmp_path), chunk=32)
  assert figs["reference"] is None
  assert figs["chirality_error_rate"] == 0.0
  # The model's cis peptide bonds need no reference: none in the jittered all-trans structure
  # (six peptide bonds from ACE to NME).
  assert figs["cis_peptide_fraction"] == figs["cis_peptide_fraction_reweighted"] == 0.0
  assert figs["cis_peptide_fraction_per_bond"] == [0.0] * 6
  assert "cis_peptide_fraction_reference" not in figs
  assert "eubo" not in figs
  # A peptide: every residue's basin populations, plain and reweighted (no reference here).
  n_pairs = len(figs["basins_model_per_pair"])
  assert n_pairs == 5 and len(figs["basins_model_reweighted_per_pair"]) == n_pairs
  for pops in figs["basins_model_per_pair"] + figs["basins_model_reweighted_per_pair"]:
    assert set(pops) == {"beta_C5", "C7eq_PII", "alphaR", "phi_neg_other", "phi_pos"}
    assert abs(sum(pops.values()) - 1.0) < 1e-9
  assert "basins_reference_per_pair" not in figs and "basins_model" not in figs
  for name in ("ramachandran.png", "samples.dcd", "samples.pdb"):
    assert os.path.getsize(tmp_path / name) > 0


def test_report_counts_mirrored_samples_against_a_given_reference(tmp_path):
  target = make_target("aldp")
  sampler = _jitter_sampler(target)

  def mirrored(key, n):
    x, lq = sampler(key, n)
    return -x, lq

  ref = np.asarray(sampler(jax.random.PRNGKey(1), 50)[0])
  figs = molecular_report(target, mirrored, lambda x: jnp.zeros(x.shape[:1]),
                          jax.random.PRNGKey(0), 40, None, reference=ref, chunk=20)
  assert figs["reference"] == "given"
  assert figs["chirality_error_rate"] == 1.0
  assert figs["n_wrong_chirality"] == 40
  assert abs(sum(figs["basins_reference"].values()) - 1.0) < 1e-9


def test_forward_figures_of_a_model_trained_on_reference_frames_use_the_held_out_ones(tmp_path):
  """Forward KL trains on the even walkers' frames of the reference set; its report measures
  EUBO, NLL and forward ESS on the odd walkers' frames only (and says so)."""
  from cmtjax.methods import ForwardKLConfig
  from cmtjax.targets.molecules import reference as ref
  target = make_target("aldp")
  shipped = ref.load_reference_set("aldp")
  rows = np.flatnonzero(shipped.walker < 6)[::4]  # a small set of six walkers: quick
  path = ref.save_reference(str(tmp_path / "small.npz"), name="aldp",
                            positions=shipped.positions[rows], energies=shipped.energies[rows],
                            walker=shipped.walker[rows], temperature=shipped.temperature,
                            protocol=shipped.protocol)
  frames = ref.load_reference_set("aldp", path)
  odd = frames.walker % 2 == 1
  # log q = +10 on every training (even-walker) frame, 0 elsewhere: a memorising model.
  train = jnp.asarray(frames.positions[~odd])

  def log_q(x):
    d = jnp.min(jnp.sum((x[:, None, :] - train[None]) ** 2, -1), axis=1)
    return jnp.where(d < 1e-10, 10.0, 0.0)

  kw = dict(chunk=256, reference_path=path)
  assert np.asarray(log_q(jnp.asarray(frames.positions))).mean() > 4.0  # on every frame
  held = molecular_report(target, _jitter_sampler(target), log_q, jax.random.PRNGKey(0), 64,
                          None, held_out=ForwardKLConfig().held_out_reference, **kw)
  assert held["forward_figures_on"] == "reference frames held out of training"
  assert held["n_ref_forward"] == odd.sum() and held["n_ref"] == frames.walker.size
  assert held["nll"] == 0.0  # none of the held-out frames was memorised
  assert np.isfinite(held["ramachandran_tv"])  # still against every frame
