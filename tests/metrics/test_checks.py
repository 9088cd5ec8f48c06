"""Run warnings (missing modes, log Z beyond its error, unreached target) and the standard
error of the reverse log Z estimate that the log Z check relies on."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.metrics import run_warnings
from cmtjax.metrics.evaluate import _log_z_standard_error


def test_a_clean_run_has_no_warnings():
  m = {"method": "cmt", "modes_covered": 40, "n_modes": 40, "log_z_error": 4e-4,
       "log_z_se": 5e-4, "target_reached_at_step": 8}
  assert run_warnings(m, 1.0) == []


def test_a_missing_mode_is_reported_even_at_high_ess():
  m = {"method": "cmt", "reverse_ess": 0.95, "modes_covered": 39, "n_modes": 40,
       "log_z_error": math.log(39 / 40), "log_z_se": 5e-4, "target_reached_at_step": 8}
  w = run_warnings(m, 1.0)
  assert len(w) == 2
  assert w[0].startswith("only 39 of 40 modes covered")
  assert "log Z error -0.0253 exceeds 3 standard errors" in w[1]


def test_log_z_within_its_error_passes_and_beyond_it_fails():
  base = {"log_z_se": 0.01}
  assert run_warnings({**base, "log_z_error": 0.029}) == []
  assert "exceeds" in run_warnings({**base, "log_z_error": -0.031})[0]
  # A tiny standard error does not turn float32 noise into a warning.
  assert run_warnings({"log_z_error": 5e-4, "log_z_se": 1e-6}) == []
  assert run_warnings({"log_z_error": float("nan"), "log_z_se": 0.1})  # NaN is reported


def test_an_unreached_target_and_wrong_chirality_are_reported():
  w = run_warnings({"method": "cmt", "target_reached_at_step": None}, 0.42)
  assert w == ["CMT did not reach the target within the budget (final β = 0.42): the flow "
               "fits an intermediate distribution; raise max_target_evals"]
  # At β = 1 the path is short of the target in α (the trust region still binding).
  w = run_warnings({"method": "cmt", "target_reached_at_step": None}, 1.0, 0.97)
  assert "final α = 0.97 at β = 1" in w[0] and "trust region" in w[0]
  assert "wrong-handed" in run_warnings({"chirality_error_rate": 0.001})[0]
  assert run_warnings({"method": "reverse_kl", "target_reached_at_step": None}) == []


def test_a_run_planned_to_its_time_limit_gets_advice_about_time():
  base = {"method": "cmt", "target_reached_at_step": None, "max_target_evals": 10_000,
          "max_training_minutes": 5.0}
  (w,) = run_warnings({**base, "planned_target_evals": 4_000}, 0.5)
  assert "within the 4,000 target evaluations planned to fit the time limit" in w
  assert "--plan-minutes" in w
  # Time to spare (the plan kept the whole budget): the budget is what to raise.
  (w,) = run_warnings({**base, "planned_target_evals": 10_000}, 0.5)
  assert w.endswith("raise max_target_evals")
  # Cut by the clock all the same: resume it with a plan, not with a plain limit.
  w = run_warnings({**base, "planned_target_evals": 4_000, "stopped_at_time_limit": True,
                    "target_evals": 3_000}, 0.5)
  assert "before the time limit" in w[0] and "plan it" not in w[0]
  assert "(--resume DIR --plan-minutes M)" in w[1]
  w = run_warnings({**base, "stopped_at_time_limit": True, "target_evals": 3_000}, 0.5)
  assert "plan it to the limit (--plan-minutes)" in w[0]
  assert "(--resume DIR --minutes M)" in w[1]


def test_log_z_standard_error_matches_the_spread_over_repeats():
  # p = N(0, 1), q = N(0, 1.5²) in 1-D: log w = log p - log q, log Z = 0.
  n, reps = 4000, 300
  x = 1.5 * jax.random.normal(jax.random.PRNGKey(0), (reps, n))
  log_w = -0.5 * x**2 + 0.5 * (x / 1.5) ** 2 + jnp.log(1.5)
  log_z = jax.scipy.special.logsumexp(log_w, axis=1) - jnp.log(n)
  se = np.asarray(jax.vmap(_log_z_standard_error)(log_w))
  assert float(np.std(np.asarray(log_z))) == pytest.approx(float(np.mean(se)), rel=0.15)
  # Equal weights: no error; non-finite weights are left out.
  assert float(_log_z_standard_error(jnp.zeros(10))) == pytest.approx(0.0, abs=1e-6)
  lw = jnp.concatenate([log_w[0], jnp.array([jnp.nan, -jnp.inf])])
  assert float(_log_z_standard_error(lw)) == pytest.approx(float(se[0]), rel=1e-4)
