"""Fixed annealing schedules: the multipliers reproduce the intended β / temperature path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.cmt import init_path, update_path
from cmtjax.flows import FlowConfig, make_flow
from cmtjax.methods import CMTConfig, make_cmt
from cmtjax.methods.schedules import beta_schedule, fixed_multipliers
from cmtjax.targets import make_target
from cmtjax.train import train


@pytest.mark.parametrize("kind", ["linear_beta", "geometric_beta"])
def test_beta_schedules_through_the_path_bookkeeping(kind):
  table = fixed_multipliers(kind, 7)
  beta = beta_schedule(kind, 7)
  path = init_path(jnp.float32)
  for i, (lam, eta) in enumerate(table):
    assert eta == 0
    path = update_path(path, jnp.float32(lam), jnp.float32(eta))
    np.testing.assert_allclose(float(path.beta), beta[i + 1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(path.alpha), 1.0, rtol=1e-5)  # geometric: α stays 1
  assert tuple(table[-1]) == (0.0, 0.0)


def test_temperature_ladder():
  table = fixed_multipliers("geometric_temperature", 5, t_max_ratio=4.0)
  ratios = 1 + table[:, 1]
  np.testing.assert_allclose(ratios, 4.0 ** (1 - np.arange(5) / 4))
  assert np.all(table[:, 0] == 0)
  # The tempered path forgets q_0 at once: α = T/T_i, β = 1.
  path = update_path(init_path(jnp.float32), jnp.float32(0.0), jnp.float32(table[0, 1]))
  np.testing.assert_allclose([float(path.alpha), float(path.beta)], [0.25, 1.0], rtol=1e-6)


def test_schedule_validation():
  with pytest.raises(ValueError, match="schedule_steps must be >= 1"):
    CMTConfig(schedule="linear_beta")
  with pytest.raises(ValueError, match="unknown 'cosine'"):
    CMTConfig(schedule="cosine")


def test_fixed_schedule_runs_through_the_cmt_step():
  target = make_target("double_well2d")
  flow = make_flow(FlowConfig(dim=2, n_layers=2, hidden=(16,), n_bins=8, base_scale=2.0))
  cfg = CMTConfig(schedule="linear_beta", schedule_steps=3, n_samples=500, n_grad_steps=3,
                  batch_size=64)
  res = train(make_cmt(cfg, flow, target, n_steps=4), jax.random.PRNGKey(0),
              flow.init(jax.random.PRNGKey(1)), progress=False)
  betas = [r["beta"] for r in res.records]
  np.testing.assert_allclose(betas, [1 / 3, 2 / 3, 1.0, 1.0], rtol=1e-5)
  assert [r["at_target"] for r in res.records] == [False, False, True, True]
