"""Every method's static ``evals_per_step`` equals the target evaluations it really makes.

FAB, TA-BG and forward KL are counted in their own tests; here CMT (its fixed schedules
share the adaptive step's sampling) and reverse KL (with top-k dropping) get the same
counting wrapper.
"""

from __future__ import annotations

import math

import jax
import pytest

from cmtjax.methods import CMTConfig, ReverseKLConfig, evals_per_step, make_method
from cmtjax.train import train
from methods_testing import counting, gauss_target, small_flow


@pytest.mark.parametrize("name, cfg", [
    ("cmt", CMTConfig(n_samples=500, n_grad_steps=5, batch_size=64)),
    ("reverse_kl", ReverseKLConfig(batch_size=64, n_grad_steps=4, drop_top=3)),
])
def test_static_cost_matches_the_counted_evaluations(name, cfg):
  target, calls, _ = counting(gauss_target())
  flow = small_flow()
  method = make_method(name, cfg, flow, target, 3)
  assert method.evals_per_step == evals_per_step(name, cfg)
  res = train(method, jax.random.PRNGKey(0), flow.init(jax.random.PRNGKey(1)), progress=False)
  assert calls.value == res.target_evals == 3 * method.evals_per_step


def test_a_larger_annealing_buffer_is_counted_and_the_budget_holds():
  """N_annealing samples per step until the target is reached, N afterwards; the loop stops
  before a step that would exceed the budget, and the cosine decay ends with the run."""
  target, calls, _ = counting(gauss_target())
  flow = small_flow()
  cfg = CMTConfig(n_samples=200, n_samples_annealing=1000, n_grad_steps=5, batch_size=64,
                  eps_tr=2.0, eps_ent=3.0)
  budget = 7_900
  method = make_method("cmt", cfg, flow, target, budget // 200, max_target_evals=budget)
  res = train(method, jax.random.PRNGKey(0), flow.init(jax.random.PRNGKey(1)), progress=False)
  n_evals = [r["n_evals"] for r in res.records]
  assert calls.value == res.target_evals == sum(n_evals)
  assert budget - 200 < res.target_evals <= budget  # nothing left for one more step
  reached = [r["step"] for r in res.records if r["at_target"]][0]
  # Steps up to and including the one that reached the target used the annealing buffer.
  assert n_evals[:reached + 1] == [1000] * (reached + 1)
  assert set(n_evals[reached + 1:]) == {200} and len(n_evals) > reached + 2
  assert all(r["n_invalid"] == 0 for r in res.records)  # padding is not counted as invalid
  lrs = [r["learning_rate"] for r in res.records[reached:]]
  assert all(a >= b for a, b in zip(lrs, lrs[1:]))
  # The horizon is the number of steps the budget allowed: the last step is one step short
  # of the final rate on the cosine.
  total, t = len(res.records), reached
  expected_last = cfg.final_learning_rate + 0.5 * (cfg.learning_rate - cfg.final_learning_rate) * (
      1 + math.cos(math.pi * (total - 1 - t) / (total - t)))
  assert lrs[-1] == pytest.approx(expected_last, rel=1e-4)


def test_an_annealing_buffer_beyond_the_budget_is_refused():
  with pytest.raises(ValueError, match="budget too small"):
    make_method("cmt", CMTConfig(n_samples=100, n_samples_annealing=1000), small_flow(),
                gauss_target(), 5, max_target_evals=500)
