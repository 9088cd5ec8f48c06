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


def test_early_stopping_keeps_the_parameters_of_the_best_validation_step():
  """With reference frames, every fourth training walker is set aside: forward KL never
  draws them, measures its NLL on them after each outer step, and its state's parameters are
  those of the best step so far while the optimiser goes on from the latest."""
  import numpy as np

  from cmtjax.flows import flow_for_target
  from cmtjax.methods.forward_kl import _validation_walkers, reference_frames
  from cmtjax.targets import make_target
  from cmtjax.targets.molecules.reference import load_reference_set
  target = make_target("aldp")
  ref_set = load_reference_set("aldp")
  walker = np.asarray(ref_set.walker)
  val_walkers = _validation_walkers(walker[walker % 2 == 0])
  assert len(val_walkers) == len(np.unique(walker[walker % 2 == 0])) // 4
  assert np.all(val_walkers % 2 == 0)  # never one of the evaluation's held-out walkers
  train_frames, val = reference_frames(target, hold_out_walkers=True, validation=True)
  in_val = np.isin(walker, val_walkers)
  np.testing.assert_array_equal(np.asarray(val), ref_set.positions[in_val])
  np.testing.assert_array_equal(np.asarray(train_frames),
                                ref_set.positions[(walker % 2 == 0) & ~in_val])

  flow = flow_for_target(dict(n_layers=2, hidden=[16], n_bins=4), target)
  params0 = flow.init(jax.random.PRNGKey(1))
  cfg = ForwardKLConfig(batch_size=32, n_grad_steps=5, learning_rate=0.05, validation_frames=200)
  method = make_forward_kl(cfg, flow, target, n_steps=4)
  res = train(method, jax.random.PRNGKey(0), params0, progress=False)
  vals = np.array([r["val_nll"] for r in res.records])
  bests = np.array([r["best_val_nll"] for r in res.records])
  assert np.all(np.isfinite(vals)), vals
  np.testing.assert_allclose(bests, np.minimum.accumulate(vals), rtol=1e-6)
  subset = np.asarray(val)[np.linspace(0, len(val) - 1, 200).astype(int)]
  nll = lambda p: -float(np.mean(np.asarray(flow.log_prob(p, subset))))  # noqa: E731
  np.testing.assert_allclose(nll(res.state.params), bests[-1], rtol=1e-4)
  np.testing.assert_allclose(nll(res.state.method_state.latest), vals[-1], rtol=1e-4)
  # A step that is not better than the best so far leaves the parameters where they were and
  # moves only the latest ones (a best so far that no step can beat).
  state = method.init(jax.random.PRNGKey(0), params0)
  state = state._replace(method_state=state.method_state._replace(
      best_val_nll=jax.numpy.array(-1e9)))
  step = jax.jit(method.step)
  for k in range(2):
    state, info = step(jax.random.PRNGKey(k), state)
  assert float(info.val_nll) > -1e9 and float(info.best_val_nll) == -1e9
  for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(params0)):
    np.testing.assert_array_equal(a, b)
  assert nll(state.method_state.latest) < nll(params0) - 1.0
  # Off: no validation set, the state's parameters are the latest.
  off = train(make_forward_kl(ForwardKLConfig(batch_size=32, n_grad_steps=5,
                                              early_stopping=False), flow, target, n_steps=1),
              jax.random.PRNGKey(0), params0, progress=False)
  assert off.records[-1]["val_nll"] is None and off.state.method_state == ()  # NaN: none
