"""FAB in the one loop: exact evaluation counting, learning, config errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cmtjax.methods import FABConfig, evals_per_step, make_fab
from cmtjax.train import train
from methods_testing import counting, gauss_target, model_ess, small_flow


def test_fab_counts_every_ais_evaluation_and_learns():
  raw = gauss_target()
  target, calls, _ = counting(raw)
  flow = small_flow()
  cfg = FABConfig(n_ais_samples=128, n_intermediate=3, n_hmc_steps=2, n_leapfrog=3,
                  buffer_capacity=512, batch_size=128, n_grad_steps=15, init_step_size=0.3,
                  learning_rate=5e-3)
  assert cfg.evals_per_step == evals_per_step("fab", cfg) == 128 * (1 + 3 * 2 * 3)
  method = make_fab(cfg, flow, target, n_steps=8)
  params0 = flow.init(jax.random.PRNGKey(1))
  ess0 = model_ess(flow, params0, raw)
  res = train(method, jax.random.PRNGKey(0), flow.init(jax.random.PRNGKey(1)), progress=False)
  assert calls.value == res.target_evals == 8 * cfg.evals_per_step
  assert res.grad_steps == 8 * 15
  recs = res.records
  assert [r["buffer_size"] for r in recs[:5]] == [128, 256, 384, 512, 512]
  assert all(r["n_skipped"] == 0 and r["n_invalid"] == 0 for r in recs)
  # Step sizes move toward the target acceptance 0.65 from an overly small start.
  assert recs[-1]["step_size"] > recs[0]["step_size"]
  ess1 = model_ess(flow, res.state.params, raw)
  assert ess0 < 0.3 and ess1 > 0.6, (ess0, ess1)
  # FAB's own log Z estimate (AIS toward p̃²/q) of the normalised target: 0 within 0.1 nats.
  assert abs(recs[-1]["log_z"]) < 0.1


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_ais_samples=100, buffer_capacity=250), "multiple"),
    (dict(n_ais_samples=100, buffer_capacity=200, batch_size=200), "batch_size"),
    (dict(n_intermediate=0), "n_intermediate"),
    (dict(target_acceptance=1.0), "target_acceptance"),
    (dict(spacing="cubic"), "spacing"),
    (dict(n_leapfrog=0), "n_leapfrog"),
    (dict(learning_rate=0.0), "learning_rate"),
])
def test_fab_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=f"fab.{match}|{match}"):
    FABConfig(**kwargs)


def test_run_reports_fab_ais_log_z_against_the_known_value():
  """runner.run: FAB's own AIS evidence estimate lands in the metrics, next to log Z's error."""
  from cmtjax.io.config import build_config
  from cmtjax.runner import run
  from cmtjax.targets import make_target

  cfg = build_config([{"target": "double_well2d", "method": "fab", "seed": 0,
                       "max_target_evals": 20_000,
                       "flow": {"n_layers": 4, "n_bins": 8, "hidden": [32, 32]},
                       "fab": {"n_ais_samples": 128, "buffer_capacity": 1024,
                               "batch_size": 128},
                       "eval": {"n_samples": 2000, "n_repeats": 1, "every": 0}}])
  m = run(cfg, None, progress=False)
  log_z = make_target("double_well2d").log_Z
  assert np.isfinite(m["ais_log_z"])
  assert m["ais_log_z_error"] == pytest.approx(m["ais_log_z"] - log_z)
  assert abs(m["ais_log_z_error"]) < 0.3, m["ais_log_z_error"]
