"""Budget-aware CMT (cmt.plan_budget): the path reaches the target within the budget."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from cmtjax.methods.cmt import CMTConfig, make_cmt
from methods_testing import gauss_target, small_flow

N, STEPS = 256, 8


@functools.lru_cache(maxsize=None)
def _run(plan: bool, budget: int, plan_jump_min_ess: float = 0.05,
         plan_anneal_evals: int | None = None, refine_min_ess: float = 0.0,
         refine_skip_ess: float = 0.0):
  """``(infos, λ kept for the warm start)`` of ``budget // N`` steps (cached: tests share
  runs, each costs a compile). An imposed λ = η = 0 leaves the previous λ in the state, a
  solved one stores 0."""
  kw = {"plan_jump_min_ess": plan_jump_min_ess, "plan_anneal_evals": plan_anneal_evals,
        "refine_min_ess": refine_min_ess, "refine_skip_ess": refine_skip_ess}
  flow, target = small_flow(), gauss_target()
  cfg = CMTConfig(n_samples=N, n_grad_steps=3, batch_size=64, eps_tr=0.02, eps_ent=0.02,
                  plan_budget=plan, refine_fraction=0.25, **kw)
  method = make_cmt(cfg, flow, target, n_steps=budget // N, max_target_evals=budget)
  state = method.init(jax.random.PRNGKey(0), flow.init(jax.random.PRNGKey(1)))
  step = jax.jit(method.step)
  infos, kept = [], []
  for i in range(budget // N):
    state, info = step(jax.random.PRNGKey(10 + i), state)
    infos.append(info)
    kept.append(float(state.method_state.lam))
  return infos, kept


def test_a_small_budget_ends_at_the_target_only_with_the_plan():
  unplanned = _run(False, STEPS * N)[0]
  assert not bool(unplanned[-1].at_target)  # ε = 0.02 needs more than 8 steps
  assert all(float(i.eps_scale) == 1.0 for i in unplanned)
  planned = _run(True, STEPS * N)[0]
  reached = [int(i.at_target) for i in planned]
  # The target within the annealing share of the budget: 8 steps, a quarter kept at the target.
  assert reached[5] == 1, reached
  assert max(float(i.eps_scale) for i in planned) > 1.0
  assert all(1.0 <= float(i.eps_scale) <= 16.0 for i in planned)
  # The first two steps have no rate to plan from.
  assert float(planned[0].eps_scale) == float(planned[1].eps_scale) == 1.0


def test_plan_settings_are_validated():
  with pytest.raises(ValueError, match="refine_fraction"):
    CMTConfig(refine_fraction=1.0)
  with pytest.raises(ValueError, match="max_eps_scale"):
    CMTConfig(max_eps_scale=0.5)
  with pytest.raises(ValueError, match="plan_jump_min_ess"):
    CMTConfig(plan_jump_min_ess=2.0)
  with pytest.raises(ValueError, match="plan_anneal_evals"):
    CMTConfig(plan_anneal_evals=0)
  with pytest.raises(ValueError, match="refine_min_ess"):
    CMTConfig(refine_min_ess=1.0)
  with pytest.raises(ValueError, match="refine_skip_ess"):
    CMTConfig(refine_skip_ess=-0.1)
  with pytest.raises(ValueError, match="fit_weight_cap"):
    CMTConfig(fit_weight_cap=0.5)


def test_an_ess_floor_at_the_target_tempers_only_the_steps_there():
  """cmt.refine_min_ess: the annealing, up to the step that reaches the target, is the same
  step for step; after it every step's weights keep the floor (λ raised from 0 where p̃/q̂
  falls below it), and the path stays at the target."""
  plain, floored = _run(True, STEPS * N)[0], _run(True, STEPS * N, refine_min_ess=0.9)[0]
  first = next(k for k, i in enumerate(plain) if bool(i.at_target))
  assert first < STEPS - 1
  for a, b in zip(plain[:first], floored[:first]):
    assert float(a.lam) == float(b.lam) and float(a.step_ess) == float(b.step_ess)
  assert bool(floored[first].at_target) and float(floored[first].lam) == float(plain[first].lam)
  for b in floored[first + 1:]:
    assert np.isclose(float(b.alpha), 1.0) and np.isclose(float(b.beta), 1.0)
    assert float(b.step_ess) >= 0.9 - 1e-4, float(b.step_ess)
  # The step after the arrival draws the same buffer in both runs: below the floor in the
  # plain run, so tempered here (later buffers differ).
  assert float(plain[first + 1].step_ess) < 0.9 and float(floored[first + 1].lam) > 0.0


def _arrival(run):
  """(step, λ kept for the next warm start) of the step that reached the target, or None."""
  infos, kept = run
  for i, info in enumerate(infos):
    if bool(info.at_target):
      return i, kept[i]
  return None


def test_the_planned_jump_is_imposed_only_where_its_weights_are_usable():
  """The last annealing step the budget allows imposes λ = η = 0 (the dual is not solved, the
  warm start keeps its λ > 0); with a jump ESS floor no buffer meets it never does, and any
  arrival comes from the dual (which stores λ = 0)."""
  jumped = _arrival(_run(True, STEPS * N))
  assert jumped is not None and jumped[1] > 0, jumped
  refused = _arrival(_run(True, STEPS * N, plan_jump_min_ess=1.0))
  assert refused is None or refused[1] == 0, refused


def test_the_learning_rate_decays_from_the_planned_end_of_the_annealing():
  """With the plan, the cosine decay starts at the target or, at the latest, where the
  annealing share of the budget ends (6 of 8 steps here), even if the jump was refused;
  without the plan and without the target, the learning rate stays."""
  lr0 = CMTConfig().learning_rate
  unplanned = _run(False, STEPS * N)[0]
  assert all(np.isclose(float(i.learning_rate), lr0) for i in unplanned)
  refused = [float(i.learning_rate) for i in _run(True, STEPS * N, plan_jump_min_ess=1.0)[0]]
  assert refused[-1] < 0.9 * lr0, refused
  assert all(np.isclose(lr, lr0) for lr in refused[:6]), refused
  # On time, the jump's step starts the decay as before.
  infos = _run(True, STEPS * N)[0]
  first = next(k for k, i in enumerate(infos) if bool(i.at_target))
  lrs = [float(i.learning_rate) for i in infos]
  assert all(np.isclose(lr, lr0) for lr in lrs[:first + 1]) and lrs[-1] < 0.9 * lr0, lrs


def test_an_annealing_budget_in_evaluations_caps_the_annealing_share():
  """plan_anneal_evals = 4 N of an 8 N budget (refine_fraction would allow 6 N): the target
  within 4 steps, and the learning rate's decay from there."""
  lr0 = CMTConfig().learning_rate
  infos = _run(True, STEPS * N, plan_anneal_evals=4 * N)[0]
  first = next(k for k, i in enumerate(infos) if bool(i.at_target))
  assert first <= 3, [int(i.at_target) for i in infos]
  lrs = [float(i.learning_rate) for i in infos]
  assert all(np.isclose(lr, lr0) for lr in lrs[:first + 1]) and lrs[-1] < 0.9 * lr0, lrs
  assert lrs[4] < lr0  # the share refine_fraction allows would keep lr0 to step 6


def test_a_skip_threshold_at_the_target_leaves_out_only_the_fits_there():
  """cmt.refine_skip_ess: the steps up to the one that reaches the target are the same step
  for step; after it a step whose ESS is below the threshold (here every one) fits nothing
  (NaN loss, no skipped optimiser step counted), and the next step draws from the same flow."""
  plain, skipping = _run(True, STEPS * N)[0], _run(True, STEPS * N, refine_skip_ess=0.999)[0]
  first = next(k for k, i in enumerate(plain) if bool(i.at_target))
  assert first < STEPS - 2
  for a, b in zip(plain[:first + 1], skipping[:first + 1]):
    assert float(a.loss) == float(b.loss) and not bool(b.fit_skipped)
  later = skipping[first + 1:]
  assert all(bool(i.fit_skipped) and np.isnan(float(i.loss)) and int(i.n_skipped) == 0
             for i in later)
  # Unchanged flow: the entropy estimate of its buffers (fresh draws) stays put.
  ent = [float(i.entropy) for i in later]
  assert np.std(ent) < 0.2, ent
  assert not any(bool(i.fit_skipped) for i in plain)
