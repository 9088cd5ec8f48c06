"""TA-BG: the paper's ladder, weight clipping, phases, exact counting, learning, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.methods import TABGConfig, evals_per_step, make_tabg
from cmtjax.train import train
from methods_testing import counting, gauss_target, model_ess, small_flow


def test_default_ladder_is_the_papers_molecular_ladder():
  paper = [1200, 1028.69, 881.84, 755.95, 648.04, 555.52, 476.22, 408.24, 349.96, 300]
  np.testing.assert_allclose(TABGConfig().ladder(), paper, atol=0.006)
  cfg = TABGConfig(n_reverse_kl_steps=2, steps_per_rung=0, temperatures=(4.0, 2.0, 1.0),
                   t_target=1.0)
  np.testing.assert_allclose(cfg.schedule(10), [4, 4, 2, 2, 2, 2, 1, 1, 1, 1])
  cfg = TABGConfig(n_reverse_kl_steps=1, steps_per_rung=2, temperatures=(4.0, 2.0, 1.0),
                   t_target=1.0)
  np.testing.assert_allclose(cfg.schedule(100), [4, 2, 2, 1, 1])
  # Defaults: a tenth of the planned steps at T_max, the ladder spread over the rest.
  cfg = TABGConfig(temperatures=(4.0, 2.0, 1.0), t_target=1.0)
  np.testing.assert_allclose(cfg.schedule(20), [4] * 2 + [2] * 9 + [1] * 9)


def test_tabg_phases_counting_and_learning():
  raw = gauss_target()
  target, calls, _ = counting(raw)
  flow = small_flow()
  cfg = TABGConfig(temperatures=(1200.0, 600.0, 300.0), n_reverse_kl_steps=2, steps_per_rung=2,
                   n_samples=1000, n_grad_steps=20, buffer_size=1000, batch_size=256,
                   clip_fraction=1e-3, reverse_kl_learning_rate=5e-3, learning_rate=5e-3)
  assert evals_per_step("tabg", cfg) == 1000
  ess0 = model_ess(flow, flow.init(jax.random.PRNGKey(1)), raw)
  res = train(make_tabg(cfg, flow, target, n_steps=8), jax.random.PRNGKey(0),
              flow.init(jax.random.PRNGKey(1)), progress=False)
  recs = res.records
  assert calls.value == res.target_evals == 8 * 1000 and res.grad_steps == 8 * 20
  assert [r["phase"] for r in recs] == [0, 0, 1, 1, 1, 1, 1, 1]
  np.testing.assert_allclose([r["temperature"] for r in recs],
                             [1200, 1200, 600, 600, 300, 300, 300, 300])
  assert [r["n_clipped"] for r in recs] == [0, 0] + [1] * 6
  assert all(r["n_skipped"] == 0 for r in recs)
  # Reverse KL at 4 T fits the broadened target N(μ, 4 · 0.25 I): ESS against it is high.
  ess1 = model_ess(flow, res.state.params, raw)
  assert ess0 < 0.3 and ess1 > 0.7, (ess0, ess1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=1000, n_grad_steps=30), "multiple"),
    (dict(temperatures=(300.0, 600.0)), "decreasing"),
    (dict(temperatures=(1200.0, 600.0)), "end at"),
    (dict(t_max=100.0), "t_max"),
    (dict(n_temperatures=1), "n_temperatures must be >= 2"),
    (dict(clip_fraction=1.0), "clip_fraction"),
    (dict(steps_per_rung=-1), "steps_per_rung"),
    (dict(reverse_kl_fraction=1.0), "reverse_kl_fraction"),
])
def test_tabg_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    TABGConfig(**kwargs)
