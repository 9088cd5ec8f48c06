"""A run planned to end within a time limit (``train(..., plan_to_time_limit=True)``,
``cmtjax train --plan-minutes``): the budget set from the first steps' timing, lowered when the
machine slows, raised when it gets faster early in the run, and the same run as one given that
budget from the start."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.flows import FlowConfig, make_flow
from cmtjax.methods import CMTConfig, ReverseKLConfig, make_cmt, make_reverse_kl
from cmtjax.targets.base import Target
from cmtjax.train import train

FLOW = make_flow(FlowConfig(dim=2, coupling="spline", n_layers=2, hidden=(8,), n_bins=4,
                            base_scale=2.0, box=4.0))
TARGET = Target(name="gauss", dim=2,
                log_prob=lambda x: -0.5 * jnp.sum((x - 0.5) ** 2, -1) - jnp.log(2 * jnp.pi))
N = 64
CONFIG = CMTConfig(n_samples=N, n_grad_steps=2, batch_size=16, plan_budget=True,
                   refine_fraction=0.2)


class _Clock:
  """A stand-in for the loop's ``time`` module: step i takes ``durations[i]`` seconds (the
  last one for every later step)."""

  def __init__(self, durations):
    self.now, self.calls, self.durations = 0.0, 0, list(durations)

  def perf_counter(self):
    self.calls += 1
    if self.calls % 2 == 0:  # the loop reads the clock before and after each step
      i = self.calls // 2 - 1
      self.now += self.durations[min(i, len(self.durations) - 1)]
    return self.now


def _cmt(budget):
  return make_cmt(CONFIG, FLOW, TARGET, n_steps=budget // N, max_target_evals=budget)


def _run(method, monkeypatch, durations, **kw):
  monkeypatch.setattr(importlib.import_module("cmtjax.train.loop"), "time", _Clock(durations))
  return train(method, jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)), progress=False,
               **kw)


def _untimed(records):
  return [{k: v for k, v in r.items() if k != "timing"} for r in records]


def test_the_budget_is_what_fits_and_the_run_is_the_run_of_that_budget(monkeypatch):
  # 25 s (compiling), then 10 s a step, 100 s in all: after 2 steps (35 s) 98 % of the 65 s
  # left fit 6.37 steps of 64 evaluations: a budget of 128 + 407 = 535, 8 steps, 95 s.
  res = _run(_cmt(20 * N), monkeypatch, [25.0, 10.0], max_training_seconds=100.0,
             plan_to_time_limit=True)
  assert res.planned_target_evals == 535
  assert len(res.records) == 8 and res.target_evals == 8 * N
  assert res.wall_seconds == pytest.approx(95.0) and not res.stopped_at_time_limit
  # The plan moved with the budget: the learning rate's decay began at the annealing share's
  # end (int(0.8 * 535) // 64 = 6 steps), not at the 16 steps of the configured 1,280.
  lr = np.array([r["learning_rate"] for r in res.records]) / CONFIG.learning_rate
  np.testing.assert_allclose(lr[:6], 1.0, rtol=1e-6)
  assert lr[7] < lr[6] < 0.99
  # The same run as one that had that budget from the start (nothing in steps 0 and 1
  # depends on the budget), without a time limit.
  fixed = _run(_cmt(535), monkeypatch, [25.0, 10.0])
  assert fixed.planned_target_evals is None
  assert _untimed(fixed.records) == _untimed(res.records)
  np.testing.assert_array_equal(jax.flatten_util.ravel_pytree(fixed.state.params)[0],
                                jax.flatten_util.ravel_pytree(res.state.params)[0])


def test_a_machine_that_slows_down_lowers_the_budget_and_the_run_ends_in_time(monkeypatch):
  # 10 s a step at first (budget: 128 + int(0.98 * 170 / (10 / 64)) = 1,194, 18 steps), then
  # 20 s from the fifth step on: the plan is lowered and the run still ends within 200 s.
  res = _run(_cmt(40 * N), monkeypatch, [10.0] * 4 + [20.0], max_training_seconds=200.0,
             plan_to_time_limit=True)
  assert res.planned_target_evals < 1194
  assert res.wall_seconds <= 200.0 and not res.stopped_at_time_limit
  assert len(res.records) == res.planned_target_evals // N
  # A limit the budget never reaches: the configured budget stands.
  ample = _run(_cmt(6 * N), monkeypatch, [10.0], max_training_seconds=1e4,
               plan_to_time_limit=True)
  assert ample.planned_target_evals == 6 * N and len(ample.records) == 6


def test_a_machine_that_gets_faster_early_raises_the_budget_and_uses_its_time(monkeypatch):
  # 25 s (compiling), two steps of 30 s (other work on the machine), then 10 s a step, 300 s.
  # After step 1 the plan is 128 + int(0.98 * 245 / (30 / 64)) = 640 evaluations (10 steps);
  # once the latest steps' median is 20 s (step 4) and then 10 s (step 5), with at most half
  # of the plan spent, it is raised to 931, then to 384 + int(0.98 * 185 * 6.4) = 1,544.
  res = _run(_cmt(40 * N), monkeypatch, [25.0, 30.0, 30.0, 10.0], max_training_seconds=300.0,
             plan_to_time_limit=True)
  assert res.planned_target_evals == 1544
  assert len(res.records) == 1544 // N and not res.stopped_at_time_limit
  assert 0.9 * 300.0 < res.wall_seconds <= 300.0  # the first plan alone: 155 s
  # The learning rate's decay follows the last plan: constant until the path reaches the
  # target (step 13 here), then a cosine to the raised budget's end (the first plan's decay
  # would have ended at its 10th step).
  lr = np.array([r["learning_rate"] for r in res.records]) / CONFIG.learning_rate
  k = [r["at_target"] for r in res.records].index(True)
  np.testing.assert_allclose(lr[:k], 1.0, rtol=1e-6)
  assert k >= 10 and np.all(np.diff(lr[k:]) < 0) and lr[-1] < 0.05
  # Faster only after half of the plan is spent: the plan stands (640, ended early).
  late = _run(_cmt(40 * N), monkeypatch, [25.0] + [30.0] * 5 + [10.0],
              max_training_seconds=300.0, plan_to_time_limit=True)
  assert late.planned_target_evals == 640 and len(late.records) == 10
  assert late.wall_seconds == pytest.approx(25.0 + 5 * 30.0 + 4 * 10.0)


def test_planning_needs_a_limit_and_a_method_that_can_change_its_budget(monkeypatch):
  with pytest.raises(ValueError, match="needs the limit"):
    _run(_cmt(4 * N), monkeypatch, [1.0], plan_to_time_limit=True)
  unbudgeted = make_cmt(CONFIG, FLOW, TARGET, n_steps=4)
  with pytest.raises(ValueError, match="needs a budget of target evaluations"):
    _run(unbudgeted, monkeypatch, [1.0], max_training_seconds=10.0, plan_to_time_limit=True)
  rkl = make_reverse_kl(ReverseKLConfig(batch_size=32, n_grad_steps=1), FLOW, TARGET,
                        n_steps=4)
  with pytest.raises(ValueError, match="'reverse_kl' cannot plan its budget"):
    _run(rkl, monkeypatch, [1.0], max_training_seconds=10.0, plan_to_time_limit=True)


def test_a_planned_run_resumed_without_a_plan_goes_on_to_its_configured_budget(
    tmp_path, monkeypatch):
  from cmtjax.train import CheckpointOptions
  opts = CheckpointOptions(str(tmp_path / "ckpt"), every=100, keep=1, fingerprint="f")
  method = _cmt(12 * N)
  first = _run(method, monkeypatch, [25.0, 10.0], max_training_seconds=100.0,
               plan_to_time_limit=True, checkpoint=opts)
  assert first.planned_target_evals == 535 and len(first.records) == 8
  more = _run(method, monkeypatch, [10.0], checkpoint=opts, resume=True)
  assert more.planned_target_evals is None and len(more.records) == 12
  # The learning rate's decay was stretched again over the configured 12 steps.
  lr = [r["learning_rate"] for r in more.records]
  assert lr[8] > lr[7]
