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
