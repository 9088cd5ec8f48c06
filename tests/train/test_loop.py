"""The one loop with CMT and reverse KL, end to end on small problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.flows import FlowConfig, make_flow
from cmtjax.methods import CMTConfig, ReverseKLConfig, make_cmt, make_reverse_kl
from cmtjax.targets import make_target
from cmtjax.targets.base import Target
from cmtjax.train import plan_steps, train

SMALL_FLOW = dict(coupling="spline", n_layers=4, hidden=(32, 32), n_bins=8, base_scale=2.0)


def _gauss_target(mu=(1.0, -1.0), s=0.5):
  mu = jnp.asarray(mu)

  def log_prob(x):
    return -0.5 * jnp.sum(((x - mu) / s) ** 2, -1) - 2 * jnp.log(s) - jnp.log(2 * jnp.pi)

  return Target(name="gauss", dim=2, log_prob=log_prob, log_Z=0.0)


def test_cmt_anneals_to_a_gaussian_and_respects_the_bounds():
  target = _gauss_target()
  flow = make_flow(FlowConfig(dim=2, **SMALL_FLOW))
  cfg = CMTConfig(eps_tr=0.2, eps_ent=0.3, n_samples=2000, n_grad_steps=50, batch_size=256,
                  learning_rate=3e-3, final_learning_rate=3e-4)
  method = make_cmt(cfg, flow, target, n_steps=25)
  res = train(method, jax.random.PRNGKey(0), flow.init(jax.random.PRNGKey(1)), progress=False)
  recs = res.records
  assert res.target_evals == 25 * 2000 and res.grad_steps == 25 * 50
  for r in recs:
    assert r["dual_converged"]
    assert r["kl"] <= 0.2 * (1 + 1e-3) and r["entropy_drop"] <= 0.3 * (1 + 1e-3) or r["at_target"]
    if r["lam"] > 0:
      assert abs(r["kl"] - 0.2) < 1e-3 * 0.2
  # Broad q_0 (entropy of N(0, 4I) ≈ 4.2) to the target (≈ 1.45): the entropy bound binds first.
  assert recs[0]["eta"] > 0
  assert recs[-1]["at_target"]
  betas = [r["beta"] for r in recs]
  assert all(b2 >= b1 - 1e-6 for b1, b2 in zip(betas, betas[1:]))
  x, lq = flow.sample_and_log_prob(res.state.params, jax.random.PRNGKey(5), 20_000)
  log_w = target.log_prob(x) - lq
  ess = float(jnp.exp(2 * jax.nn.logsumexp(log_w) - jax.nn.logsumexp(2 * log_w)) / 20_000)
  assert ess > 0.8
  np.testing.assert_allclose(np.asarray(x).mean(0), [1.0, -1.0], atol=0.05)


def test_fixed_number_of_annealing_steps_forces_the_target():
  target = _gauss_target()
  flow = make_flow(FlowConfig(dim=2, **SMALL_FLOW))
  cfg = CMTConfig(eps_tr=0.05, eps_ent=0.05, n_samples=1000, n_grad_steps=5, batch_size=128,
                  anneal_steps=3)
  res = train(make_cmt(cfg, flow, target, n_steps=5), jax.random.PRNGKey(0),
              flow.init(jax.random.PRNGKey(1)), progress=False)
  lam = [r["lam"] for r in res.records]
  assert all(v > 0 for v in lam[:3]) and all(v == 0 for v in lam[3:])
  assert res.records[3]["at_target"] and res.records[4]["beta"] == pytest.approx(1.0)


def test_reverse_kl_runs_and_counts_its_budget():
  target = make_target("double_well2d")
  flow = make_flow(FlowConfig(dim=2, **SMALL_FLOW))
  cfg = ReverseKLConfig(batch_size=128, n_grad_steps=20, learning_rate=3e-3, drop_top=4)
  n_steps = plan_steps(128 * 20, 3 * 128 * 20 + 5, None)
  assert n_steps == 3
  res = train(make_reverse_kl(cfg, flow, target, n_steps), jax.random.PRNGKey(0),
              flow.init(jax.random.PRNGKey(1)), progress=False)
  assert res.target_evals == 3 * 128 * 20 and res.grad_steps == 60
  assert res.records[-1]["loss"] < res.records[0]["loss"]


def test_budget_errors():
  with pytest.raises(ValueError, match="budget too small"):
    plan_steps(10_000, 5_000, None)
  with pytest.raises(ValueError, match="set a budget"):
    plan_steps(10, None, None)


def test_the_progress_bar_shows_each_method_s_key_figures():
  """One figure per label, the first key a method records: CMT's λ, η, β and step ESS; SMC's
  β, particle ESS, log Z and acceptance; never two "ess" entries."""
  from cmtjax.train.loop import _bar_text  # noqa: PLC0415
  cmt = _bar_text({"lam": 2.5, "eta": 0.0, "beta": 0.31, "step_ess": 0.72, "ess": 0.1,
                   "loss": -167.0}, 1_200_000)
  assert cmt == "λ=2.5 η=0 β=0.31 ess=0.72 loss=-167 evals=1.2e+06"
  smc = _bar_text({"beta": 1.0, "log_z": -189.67, "ess": 0.5, "acceptance": 0.65,
                   "step_size": 0.16}, 44_000)
  assert smc == "β=1 ess=0.5 log Z=-189.67 acc=0.65 evals=4.4e+04"
