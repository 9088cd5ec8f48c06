"""Forward KL on exact samples: cost charged per reference sample, learning, errors."""

from __future__ import annotations

import jax
import pytest

from cmtjax.methods import ForwardKLConfig, evals_per_step, make_forward_kl
from cmtjax.train import train
from methods_testing import counting, gauss_target, model_ess, small_flow


def test_forward_kl_is_charged_its_reference_samples_and_learns():
  target, calls, samples = counting(gauss_target())
  flow = small_flow()
  cfg = ForwardKLConfig(batch_size=256, n_grad_steps=25, learning_rate=5e-3, cost_per_sample=3)
  assert evals_per_step("forward_kl", cfg) == 256 * 25 * 3
  res = train(make_forward_kl(cfg, flow, target, n_steps=6), jax.random.PRNGKey(0),
              flow.init(jax.random.PRNGKey(1)), progress=False)
  assert calls.value == 0  # never evaluates log p̃ ...
  assert samples.value == 6 * 256 * 25  # ... and pays for every reference sample
  assert res.target_evals == 3 * samples.value and res.grad_steps == 150
  assert res.records[-1]["loss"] < res.records[0]["loss"]
  # NLL of N(μ, 0.25 I) is its entropy, log(2πe·0.25) ≈ 1.45 nats; the fit gets close.
  assert res.records[-1]["loss"] < 1.45 + 0.15
  assert model_ess(flow, res.state.params, target) > 0.8


def test_forward_kl_errors():
  flow = small_flow()
  with pytest.raises(ValueError, match="reference samples"):
    make_forward_kl(ForwardKLConfig(), flow, gauss_target(with_sample=False), 1)
  with pytest.raises(ValueError, match="forward_kl.cost_per_sample"):
    ForwardKLConfig(cost_per_sample=0)
  with pytest.raises(ValueError, match="forward_kl.learning_rate"):
    ForwardKLConfig(learning_rate=-1.0)


def test_on_a_molecule_forward_kl_trains_on_its_reference_frames(tmp_path, monkeypatch):
  """A molecule has no exact sampler: forward KL draws the frames of its reference set
  (uniformly, with replacement) and learns from them; without a set it says how to make one."""
  import numpy as np

  from cmtjax.flows import flow_for_target
  from cmtjax.methods.forward_kl import reference_sampler
  from cmtjax.targets import make_target
  from cmtjax.targets.molecules import reference
  from cmtjax.targets.molecules.reference import load_reference_set
  target = make_target("aldp")
  frames = load_reference_set("aldp").positions
  x = np.asarray(reference_sampler(target)(jax.random.PRNGKey(0), 300))
  assert x.shape == (300, frames.shape[1])
  # Every draw is a reference frame (nearest-frame distance 0), and they are not all one.
  d = ((x[:, None, :] - frames[None, :, :]) ** 2).sum(-1).min(1)
  assert np.all(d < 1e-10) and len(np.unique(x[:, 0])) > 100
  flow = flow_for_target(dict(n_layers=2, hidden=[16], n_bins=4), target)
  cfg = ForwardKLConfig(batch_size=64, n_grad_steps=30, learning_rate=3e-3)
  params0 = flow.init(jax.random.PRNGKey(1))
  res = train(make_forward_kl(cfg, flow, target, n_steps=3), jax.random.PRNGKey(0), params0,
              progress=False)
  losses = [r["loss"] for r in res.records]
  assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
  nll = lambda p: -float(np.mean(np.asarray(flow.log_prob(p, frames[:1000]))))  # noqa: E731
  assert nll(res.state.params) < nll(params0) - 10.0, (nll(params0), nll(res.state.params))
  # By default it holds out the odd walkers' frames: it draws only the even walkers' ones, and
  # the evaluation is told which frames it never saw.
  ref_set = load_reference_set("aldp")
  even = ref_set.walker % 2 == 0
  assert 0 < even.sum() < even.size
  x = np.asarray(reference_sampler(target, hold_out_walkers=True)(jax.random.PRNGKey(0), 500))
  d_even = ((x[:, None, :] - frames[None, even, :]) ** 2).sum(-1).min(1)
  assert np.all(d_even < 1e-10)
  np.testing.assert_array_equal(ForwardKLConfig().held_out_reference(ref_set.walker), ~even)
  assert ForwardKLConfig(hold_out_walkers=False).held_out_reference(ref_set.walker) is None
  monkeypatch.setenv("CMTJAX_DATA", str(tmp_path / "empty"))
  monkeypatch.setattr(reference, "shipped_reference_path",
                      lambda name: str(tmp_path / "none" / f"{name}_reference.npz"))
  with pytest.raises(FileNotFoundError, match="cmtjax reference --target aldp"):
    make_forward_kl(cfg, flow, target, 1)
