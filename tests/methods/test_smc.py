"""The adaptive tempered SMC baseline (blackjax): its cost, its answer, its place in a run."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cmtjax
from cmtjax.io.samples import load_samples
from cmtjax.methods import make_method
from cmtjax.methods.smc import SMCConfig
from cmtjax.metrics import evaluate_particles
from cmtjax.targets.base import Target
from cmtjax.train import train
from methods_testing import counting, gauss_target, small_flow


def _run(target, cfg: SMCConfig, budget: int, seed: int = 0):
  flow = small_flow()
  method = make_method("smc", cfg, flow, target, budget // cfg.evals_per_step,
                       max_target_evals=budget)
  res = train(method, jax.random.PRNGKey(seed), flow.init(jax.random.PRNGKey(1)),
              progress=False)
  return method, res


def test_every_log_density_and_gradient_evaluation_is_counted():
  """Annealing rounds cost N (ESS solve) + N (HMC init) + N·m·L (leapfrog) + N (weights);
  rounds at β = 1 skip the ESS solve. The loop charges exactly what blackjax evaluates."""
  target, calls, _ = counting(gauss_target())
  cfg = SMCConfig(n_particles=100, n_mcmc_steps=2, n_leapfrog=3)
  budget = 20 * cfg.evals_per_step
  _, res = _run(target, cfg, budget)
  costs = [r["round_evals"] for r in res.records]
  assert calls.value == res.target_evals == sum(costs) <= budget
  annealing = [r["beta"] < 1.0 for r in res.records]
  first_at_target = annealing.index(False) + 1  # the round after the one that reached β = 1
  assert set(costs[:first_at_target]) == {100 * (3 + 2 * 3)}
  assert set(costs[first_at_target:]) == {100 * (2 + 2 * 3)}
  assert len(costs) > first_at_target  # the rest of the budget went to moves at the target
  assert budget - res.target_evals < 100 * (2 + 2 * 3)  # nothing left for another round


def test_the_particles_and_log_z_match_a_gaussian_target():
  """N(μ, 0.5² I) with log Z = 0 from the flow's N(0, 2² I) base: the particles' mean and
  spread and SMC's log Z agree with the exact values within a few standard errors."""
  target = gauss_target()
  cfg = SMCConfig(n_particles=4000, n_mcmc_steps=3, n_leapfrog=5)
  method, res = _run(target, cfg, 12 * cfg.evals_per_step + 5 * 4000)
  assert res.records[-1]["beta"] == 1.0
  x, log_w, log_z = (np.asarray(a) for a in method.particles(res.state))
  w = np.exp(log_w - log_w.max())
  w /= w.sum()
  mean = w @ x
  std = np.sqrt(w @ (x - mean) ** 2)
  np.testing.assert_allclose(mean, [1.0, -1.0], atol=0.05)
  np.testing.assert_allclose(std, [0.5, 0.5], rtol=0.08)
  assert abs(float(log_z)) < 0.1
  accept = [r["acceptance"] for r in res.records[-3:]]
  assert all(0.3 < a < 0.95 for a in accept)  # the step size followed the acceptance


def test_evaluate_particles_reports_ess_log_z_and_modes():
  means = jnp.asarray([[-3.0, 0.0], [3.0, 0.0]])
  target = Target(name="two", dim=2, log_prob=lambda x: jnp.zeros(x.shape[0]), log_Z=0.5,
                  mode_weights=jnp.asarray([0.5, 0.5]),
                  assign_modes=lambda x: jnp.argmin(
                      jnp.sum((x[:, None] - means[None]) ** 2, -1), -1))
  x = np.concatenate([np.full((30, 2), [-3.0, 0.0]), np.full((10, 2), [3.0, 0.0])])
  log_w = np.concatenate([np.zeros(30), np.full(10, np.log(3.0))])  # reweights to 50/50
  fig = evaluate_particles(target, x, log_w, log_z=0.25)
  w = np.exp(log_w) / np.exp(log_w).sum()
  assert fig["particle_ess"] == pytest.approx(1 / np.sum(w ** 2) / 40)
  assert fig["log_z_error"] == pytest.approx(-0.25)
  assert fig["modes_covered"] == 2
  assert fig["mode_tv"] == pytest.approx(0.25, abs=1e-6)  # 75/25 unweighted
  assert fig["mode_tv_reweighted"] == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ValueError, match="log_w"):
    evaluate_particles(target, x, log_w[:5])


def test_a_smc_run_writes_its_particles_and_has_no_flow_to_sample(tmp_path):
  target = gauss_target()
  run = cmtjax.fit(target, cmtjax.SMC(n_particles=500, n_mcmc_steps=2, n_leapfrog=4),
                   budget=60_000, flow={"n_layers": 2, "hidden": [16], "n_bins": 8,
                                        "base_scale": 2.0},
                   out=str(tmp_path / "smc"), progress=False)
  m = run.metrics
  assert m["method"] == "smc" and m["n_particles"] == 500 and m["final_beta"] == 1.0
  assert 0.0 < m["particle_ess"] <= 1.0 and abs(m["log_z_error"]) < 0.3
  assert "reverse_ess" not in m and m["target_reached_at_step"] is not None
  assert 0.0 < m["smc_ess_at_target"] <= 1.0
  with open(tmp_path / "smc" / "metrics.json") as f:
    assert json.load(f)["log_z"] == pytest.approx(m["log_z"])
  s = load_samples(str(tmp_path / "smc" / "samples.npz"))
  assert s["positions"].shape == (500, 2) and np.all(np.isnan(s["log_q"]))
  assert np.isfinite(s["log_w"]).all()
  for name in ("training.png", "samples.png", "steps.jsonl"):
    assert os.path.isfile(tmp_path / "smc" / name)
  with pytest.raises(ValueError, match="particle sampler"):
    run.sample(10)
  # Evaluated again from its particles: the same figures.
  again = cmtjax.load_run(str(tmp_path / "smc"), target=target).evaluate()
  for k in ("particle_ess", "log_z", "log_z_error", "n_particles", "final_beta"):
    assert again[k] == pytest.approx(m[k]), k


def test_a_flow_without_a_base_space_is_refused():
  flow = small_flow()._replace(base_sample=None)
  with pytest.raises(ValueError, match="base_sample"):
    make_method("smc", SMCConfig(n_particles=10), flow, gauss_target(), 1)


@pytest.mark.parametrize("bad, match", [
    (dict(n_particles=1), "n_particles"), (dict(target_ess=1.0), "target_ess"),
    (dict(n_leapfrog=0), "n_leapfrog"), (dict(init_step_size=0.0), "init_step_size"),
    (dict(target_acceptance=0.0), "target_acceptance"), (dict(pull_back="base"), "pull_back")])
def test_bad_hyperparameters_are_named(bad, match):
  with pytest.raises(ValueError, match=match):
    SMCConfig(**bad)


def test_pulling_back_through_the_initial_map_is_the_same_sampler_and_refuses_trained_params():
  """``pull_back = "initial"`` (the flow's fixed map, no couplings) runs the same rounds as
  pulling back through the flow at its initial parameters; it refuses parameters that are
  not the initial ones (a trained flow from ``init_params``), which ``"flow"`` accepts."""
  target = gauss_target()
  flow = small_flow()
  params = flow.init(jax.random.PRNGKey(1))
  out = {}
  for pull_back in ("initial", "flow"):
    cfg = SMCConfig(n_particles=200, n_mcmc_steps=2, n_leapfrog=3, pull_back=pull_back)
    method = make_method("smc", cfg, flow, target, 3)
    state = method.init(jax.random.PRNGKey(0), params)
    state, info = jax.jit(method.step)(jax.random.PRNGKey(2), state)
    out[pull_back] = (state.method_state, method.particles(state)[0])
  a, b = out["initial"], out["flow"]
  np.testing.assert_allclose(float(a[0].beta), float(b[0].beta), rtol=1e-4)
  np.testing.assert_allclose(float(a[0].log_z), float(b[0].log_z), atol=1e-3)
  np.testing.assert_allclose(np.asarray(a[1]), np.asarray(b[1]), atol=1e-3)

  trained = jax.tree_util.tree_map(
      lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(3), p.shape), params)
  with pytest.raises(ValueError, match="pull_back = 'flow'"):
    make_method("smc", SMCConfig(n_particles=50), flow, target, 1).init(
        jax.random.PRNGKey(0), trained)
  make_method("smc", SMCConfig(n_particles=50, pull_back="flow"), flow, target, 1).init(
      jax.random.PRNGKey(0), trained)
  with pytest.raises(ValueError, match="initial_forward"):
    make_method("smc", SMCConfig(n_particles=50), flow._replace(initial_forward=None),
                target, 1)
