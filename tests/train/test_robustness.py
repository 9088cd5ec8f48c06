"""Bad values on purpose: NaN / inf energies and gradients are dropped, counted and survived;
a run that cannot make progress stops with a message naming the step, the reason and the
last checkpoint."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.flows import FlowConfig, make_flow
from cmtjax.methods import CMTConfig, ReverseKLConfig, make_cmt, make_reverse_kl
from cmtjax.targets.base import Target
from cmtjax.train import CheckpointOptions, TrainingStalled, stall_reason, train

FLOW = make_flow(FlowConfig(dim=2, coupling="spline", n_layers=2, hidden=(8,), n_bins=4,
                            base_scale=2.0, box=4.0))
N, K = 512, 5


def _gauss(x):
  return -0.5 * jnp.sum((x - 0.5) ** 2, -1) - jnp.log(2 * jnp.pi)


def _bad_regions(x):
  """NaN where x0 > 1, +inf where x1 > 1.5 (and x0 <= 1), -inf where x1 < -2 (and x0 <= 1)."""
  lp = _gauss(x)
  lp = jnp.where(x[:, 1] > 1.5, jnp.inf, lp)
  lp = jnp.where(x[:, 1] < -2.0, -jnp.inf, lp)
  return jnp.where(x[:, 0] > 1.0, jnp.nan, lp)


def _expected_bad(x):
  x = np.asarray(x)
  return int(np.sum((x[:, 0] > 1.0) | (x[:, 1] > 1.5) | (x[:, 1] < -2.0)))


def _target(log_prob):
  return Target(name="bad", dim=2, log_prob=log_prob)


def _finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


def test_cmt_drops_and_counts_nan_and_inf_energies():
  method = make_cmt(CMTConfig(n_samples=N, n_grad_steps=K, batch_size=64), FLOW,
                    _target(_bad_regions), n_steps=3)
  params = FLOW.init(jax.random.PRNGKey(1))
  state = method.init(jax.random.PRNGKey(0), params)
  key = jax.random.PRNGKey(7)
  x, _ = FLOW.sample_and_log_prob(params, jax.random.split(key)[0], N)
  expected = _expected_bad(x)
  assert 0.05 * N < expected < 0.9 * N  # the test is about a partly bad buffer
  new_state, info = jax.jit(method.step)(key, state)
  assert int(info.n_invalid) == expected
  assert int(info.n_skipped) == 0 and bool(info.dual_converged)
  assert _finite(new_state) and np.isfinite(float(info.lam)) and float(info.step_ess) > 0
  # The parameters moved (the step learned from the valid part of the buffer).
  assert not np.array_equal(np.asarray(jax.tree_util.tree_leaves(new_state.params)[0]),
                            np.asarray(jax.tree_util.tree_leaves(params)[0]))


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_cmt_with_a_wholly_invalid_buffer_changes_nothing(bad):
  method = make_cmt(CMTConfig(n_samples=N, n_grad_steps=K, batch_size=64), FLOW,
                    _target(lambda x: jnp.full(x.shape[:1], bad)), n_steps=3)
  state = method.init(jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)))
  new_state, info = jax.jit(method.step)(jax.random.PRNGKey(2), state)
  assert int(info.n_invalid) == N and int(info.n_skipped) == K
  # Parameters, optimiser moments, multipliers and path are untouched; only the step (and
  # the count of steps drawn with the annealing buffer, which spent its evaluations) advance.
  for a, b in zip(jax.tree_util.tree_leaves(new_state.params),
                  jax.tree_util.tree_leaves(state.params)):
    np.testing.assert_array_equal(a, b)
  kept = new_state.method_state._replace(n_annealing_steps=state.method_state.n_annealing_steps)
  for a, b in zip(jax.tree_util.tree_leaves(kept),
                  jax.tree_util.tree_leaves(state.method_state)):
    np.testing.assert_array_equal(a, b)
  assert int(new_state.method_state.n_annealing_steps) == 1
  assert int(new_state.step) == 1 and not bool(info.at_target)
  reason = stall_reason(method, {"n_invalid": int(info.n_invalid),
                                 "n_skipped": int(info.n_skipped)})
  assert "all 512 target evaluations were non-finite" in reason
  assert f"all {K} gradient steps were skipped" in reason


def test_a_run_that_cannot_progress_stops_and_names_its_checkpoint(tmp_path):
  # Fine for two steps, then every energy is NaN: stalled from step 2 on; with
  # max_stalled_steps=3 the run stops after step 4 with a checkpoint of 5 steps.
  def log_prob(x):
    return _gauss(x)

  good = make_cmt(CMTConfig(n_samples=N, n_grad_steps=K, batch_size=64), FLOW, _target(log_prob),
                  n_steps=10)
  bad = make_cmt(CMTConfig(n_samples=N, n_grad_steps=K, batch_size=64), FLOW,
                 _target(lambda x: jnp.full(x.shape[:1], jnp.nan)), n_steps=10)

  def step(key, state):  # the target "breaks" at step 2 (a traced switch on the step index)
    return jax.lax.cond(state.step < 2, good.step, bad.step, key, state)

  method = good._replace(step=step)
  opts = CheckpointOptions(str(tmp_path / "ckpt"), every=100, keep=2, fingerprint="f")
  records = []
  with pytest.raises(TrainingStalled) as err:
    train(method, jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)), progress=False,
          checkpoint=opts, max_stalled_steps=3, on_record=records.append)
  e = err.value
  assert e.step == 4 and e.checkpoint == os.path.join(str(tmp_path / "ckpt"), "5")
  msg = str(e)
  assert "training stopped at step 4" in msg and "3 consecutive steps" in msg
  assert "non-finite" in msg and e.checkpoint in msg
  assert os.path.isdir(e.checkpoint)
  assert [r["n_invalid"] for r in records] == [0, 0, N, N, N]
  assert [r["n_skipped"] for r in records] == [0, 0, K, K, K]


def _breaks_after(n_good: int, config, bad_value, n_steps: int, flow=FLOW):
  """A CMT method whose target is a Gaussian for the first ``n_good`` steps and ``bad_value``
  everywhere afterwards (a traced switch on the step index)."""
  good = make_cmt(config, flow, _target(_gauss), n_steps=n_steps)
  bad = make_cmt(config, flow, _target(lambda x: jnp.full(x.shape[:1], bad_value)),
                 n_steps=n_steps)

  def step(key, state):
    return jax.lax.cond(state.step < n_good, good.step, bad.step, key, state)

  return good._replace(step=step)


def test_without_a_checkpoint_the_message_says_so():
  method = _breaks_after(1, CMTConfig(n_samples=64, n_grad_steps=2, batch_size=16), jnp.inf, 5)
  with pytest.raises(TrainingStalled, match=r"step 2: .* 2 consecutive steps; no checkpoint"):
    train(method, jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)), progress=False,
          max_stalled_steps=2)


def test_a_target_non_finite_on_the_whole_first_buffer_stops_at_once():
  """Not a stall to wait out: the target itself is broken (or the initial flow samples outside
  its domain), and the error says so after the first step."""
  from cmtjax.train import TargetNotFinite
  method = make_cmt(CMTConfig(n_samples=64, n_grad_steps=2, batch_size=16), FLOW,
                    _target(lambda x: jnp.full(x.shape[:1], jnp.nan)), n_steps=5)
  records = []
  with pytest.raises(TargetNotFinite, match="NaN or infinite for all 64 samples of the first"):
    train(method, jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)), progress=False,
          max_stalled_steps=2, on_record=records.append)
  assert len(records) == 1


def test_reverse_kl_counts_invalid_samples_exactly():
  method = make_reverse_kl(ReverseKLConfig(batch_size=N, n_grad_steps=1), FLOW,
                           _target(_bad_regions), n_steps=1)
  params = FLOW.init(jax.random.PRNGKey(1))
  state = method.init(jax.random.PRNGKey(0), params)
  key = jax.random.PRNGKey(3)
  x, _ = FLOW.sample_and_log_prob(params, jax.random.split(key, 1)[0], N)
  new_state, info = jax.jit(method.step)(key, state)
  assert int(info.n_invalid) == _expected_bad(x) > 0
  assert _finite(new_state.params)


def test_reverse_kl_skips_and_counts_non_finite_gradients():
  @jax.custom_jvp
  def poisoned(x):  # finite values, NaN derivative
    return _gauss(x)

  @poisoned.defjvp
  def _(primals, tangents):
    (x,), (t,) = primals, tangents
    return poisoned(x), jnp.full(x.shape[:1], jnp.nan) * jnp.sum(t, -1)

  method = make_reverse_kl(ReverseKLConfig(batch_size=128, n_grad_steps=4), FLOW,
                           _target(poisoned), n_steps=3)
  state = method.init(jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)))
  new_state, info = jax.jit(method.step)(jax.random.PRNGKey(2), state)
  assert int(info.n_skipped) == 4 and int(info.n_invalid) == 0
  assert np.isfinite(float(info.loss))
  for a, b in zip(jax.tree_util.tree_leaves(new_state), jax.tree_util.tree_leaves(state)):
    if a.shape == b.shape and a.dtype == b.dtype and a.ndim > 0:
      np.testing.assert_array_equal(a, b)
  with pytest.raises(TrainingStalled, match="all 4 gradient steps were skipped"):
    train(method, jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)), progress=False,
          max_stalled_steps=2)


def test_the_cli_stops_a_stalled_run_with_exit_code_3(tmp_path, monkeypatch, capsys):
  import cmtjax.runner
  from cmtjax.cli import main

  # The target breaks after the first step (all NaN from step 1 on).
  def make_method(name, config, flow, target, n_steps, **kw):
    del name, target, kw
    return _breaks_after(1, config, jnp.nan, n_steps, flow)

  monkeypatch.setattr(cmtjax.runner, "make_method", make_method)
  out = tmp_path / "run"
  code = main(["train", "--target", "double_well2d", "--out", str(out), "--budget", "2560",
               "--set", "cmt.n_samples=256", "--set", "cmt.n_grad_steps=2", "--set",
               "cmt.batch_size=32", "--set", "flow.hidden=[8]", "--set", "flow.n_layers=2",
               "--set", "eval.every=0", "--set", "checkpoint.max_stalled_steps=2",
               "--no-progress"])
  err = capsys.readouterr().err
  assert code == 3
  ckpt = os.path.join(str(out), "checkpoints", "3")
  assert f"training stopped at step 2: all 256 target evaluations were non-finite" in err
  assert ckpt in err and os.path.isdir(ckpt)
  assert len((out / "steps.jsonl").read_text().splitlines()) == 3
  assert not (out / "metrics.json").exists()


class _Clock:
  """A stand-in for the loop's ``time`` module: each step takes ``seconds`` (the first
  ``first``, as if it compiled)."""

  def __init__(self, seconds, first):
    self.now, self.calls, self.seconds, self.first = 0.0, 0, seconds, first

  def perf_counter(self):
    self.calls += 1
    if self.calls % 2 == 0:  # the loop reads the clock before and after each step
      self.now += self.first if self.calls == 2 else self.seconds
    return self.now


def test_a_time_limit_ends_the_run_after_the_last_step_that_fits_and_resume_goes_on(
    tmp_path, monkeypatch):
  import importlib
  loop = importlib.import_module("cmtjax.train.loop")

  method = make_cmt(CMTConfig(n_samples=64, n_grad_steps=2, batch_size=16), FLOW,
                    _target(_gauss), n_steps=10)
  opts = CheckpointOptions(str(tmp_path / "ckpt"), every=100, keep=2, fingerprint="f")
  evals = []
  monkeypatch.setattr(loop, "time", _Clock(seconds=10.0, first=25.0))
  # 25 s (compiling) + 10 s a step: after 5 steps (65 s) a sixth would end at 75 s > 70 s.
  res = train(method, jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)), progress=False,
              checkpoint=opts, eval_fn=lambda k, p: {"x": 1.0}, max_training_seconds=70.0)
  assert len(res.records) == 5 and res.stopped_at_time_limit
  assert res.wall_seconds == pytest.approx(65.0) and res.target_evals == 5 * 64
  assert [e["step"] for e in res.evals] == [4]  # the last step is evaluated ...
  assert res.checkpoint == os.path.join(str(tmp_path / "ckpt"), "5")  # ... and checkpointed
  # Resumed past its limit: no step. With a larger limit it goes on, counting the time used.
  monkeypatch.setattr(loop, "time", _Clock(seconds=10.0, first=12.0))
  same = train(method, jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)),
               progress=False, checkpoint=opts, resume=True, max_training_seconds=60.0,
               eval_fn=lambda k, p: {"x": 1.0})
  assert len(same.records) == 5 and same.stopped_at_time_limit
  assert [e["step"] for e in same.evals] == [4]  # the restored evaluation, no new one
  assert [d for d in os.listdir(tmp_path / "ckpt") if d.isdigit()] == ["5"]
  monkeypatch.setattr(loop, "time", _Clock(seconds=10.0, first=12.0))
  more = train(method, jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)),
               progress=False, checkpoint=opts, resume=True, max_training_seconds=100.0,
               on_eval=evals.append)
  # 65 + 12 + 10 + 10 = 97 s after 8 steps; a ninth would end at 107 s.
  assert len(more.records) == 8 and more.stopped_at_time_limit
  assert more.wall_seconds == pytest.approx(97.0)
  # A limit the budget never reaches: the budget ends the run, not the clock.
  monkeypatch.setattr(loop, "time", _Clock(seconds=10.0, first=12.0))
  done = train(method, jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)),
               progress=False, checkpoint=opts, resume=True, max_training_seconds=1e4)
  assert len(done.records) == 10 and not done.stopped_at_time_limit
  # Budget and clock ending on the same step: the budget ended the run.
  monkeypatch.setattr(loop, "time", _Clock(seconds=10.0, first=25.0))
  both = train(make_cmt(CMTConfig(n_samples=64, n_grad_steps=2, batch_size=16), FLOW,
                        _target(_gauss), n_steps=3),
               jax.random.PRNGKey(0), FLOW.init(jax.random.PRNGKey(1)), progress=False,
               max_training_seconds=50.0)
  assert len(both.records) == 3 and not both.stopped_at_time_limit
