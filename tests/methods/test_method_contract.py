"""The contract every registered method keeps, and a toy method added from outside cmtjax.

For each name in the registry: ``init`` is pure, ``step`` is jittable and deterministic, the
target evaluations the loop counts are the ones the method really makes, and the state goes
through a checkpoint unchanged. A method added with :func:`cmtjax.methods.register` then runs
through the same CLI-level machinery (config section, runner, files) as the built-in ones.
"""

from __future__ import annotations

import dataclasses
import json
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cmtjax.io.config import build_config, load_file
from cmtjax.methods import MethodSpec, get_method, make_method, method_names, register
from cmtjax.methods.registry import unregister
from cmtjax.train import Checkpointer, CheckpointOptions, train
from cmtjax.train.state import Method, TrainState
from methods_testing import counting, gauss_target, small_flow

# Small settings per method (a method registered later without an entry runs its defaults).
TINY = {
    "cmt": dict(n_samples=256, n_grad_steps=3, batch_size=64),
    "reverse_kl": dict(batch_size=64, n_grad_steps=3),
    "fab": dict(n_ais_samples=64, n_intermediate=2, n_hmc_steps=1, n_leapfrog=2,
                batch_size=64, buffer_capacity=256, n_grad_steps=2),
    "tabg": dict(n_samples=256, n_grad_steps=4, batch_size=64, buffer_size=512,
                 temperatures=(3.0, 2.0, 1.0), t_target=1.0),
    "forward_kl": dict(batch_size=64, n_grad_steps=3),
    "smc": dict(n_particles=64, n_mcmc_steps=2, n_leapfrog=3),
}


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _same(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", method_names())
def test_every_registered_method_keeps_the_contract(name, tmp_path):
  spec = get_method(name)
  cfg = spec.config(**TINY.get(name, {}))
  target, calls_lp, calls_s = counting(gauss_target())
  flow = small_flow()
  n_steps = 2
  # A method whose cost varies (SMC: its annealing rounds cost more) gets room for it; the
  # step count is the limit.
  method = make_method(name, cfg, flow, target, n_steps,
                       max_target_evals=2 * n_steps * cfg.evals_per_step)
  assert isinstance(method, Method) and method.name == name
  assert method.evals_per_step == cfg.evals_per_step
  params = flow.init(jax.random.PRNGKey(1))

  # init is pure; step is jittable and deterministic for a given key.
  s1, s2 = method.init(jax.random.PRNGKey(2), params), method.init(jax.random.PRNGKey(2), params)
  _same(s1, s2)
  step = jax.jit(method.step)
  (a, info_a), (b, info_b) = step(jax.random.PRNGKey(3), s1), step(jax.random.PRNGKey(3), s2)
  _same(a, b)
  # Info fields are scalars, or 1-D per-component figures (e.g. one per residue), which the
  # loop records as lists (and leaves out when empty).
  assert all(np.ndim(v) <= 1 for v in info_a._asdict().values())

  # The loop's count of target evaluations is what the method really evaluates.
  calls_lp.n = calls_s.n = 0
  res = train(method, jax.random.PRNGKey(0), params, progress=False)
  assert len(res.records) == n_steps
  per_sample = getattr(cfg, "cost_per_sample", 1)  # forward KL charges target samples
  counted = calls_lp.value + per_sample * calls_s.value
  assert counted == res.target_evals
  if method.step_evals is None:
    assert res.target_evals == n_steps * cfg.evals_per_step
  else:  # the loop charged each step what the method said it would cost
    assert res.target_evals == sum(r.get("round_evals", r.get("n_evals", 0))
                                   for r in res.records)

  # The state goes through a checkpoint unchanged.
  ckpt = Checkpointer(CheckpointOptions(str(tmp_path / "c"), fingerprint=name))
  ckpt.save(n_steps, res.state, jax.random.PRNGKey(0), {"target_evals": 0}, res.records, [])
  back = ckpt.restore(method.init(jax.random.PRNGKey(2), params), jax.random.PRNGKey(0))
  ckpt.close()
  _same(back.state, res.state)
  assert [r["step"] for r in back.records] == list(range(n_steps))

  if spec.summary is not None:
    json.dumps(spec.summary(res.records, cfg, target))


# ---- A method from outside cmtjax: one definition, one register() call. ----

@dataclasses.dataclass(frozen=True)
class ToyConfig:
  """Plain reverse KL with SGD, one batch per step."""

  batch_size: int = 64
  learning_rate: float = 1e-3

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"toy.batch_size must be >= 1, got {self.batch_size}")

  @property
  def evals_per_step(self) -> int:
    return self.batch_size


class ToyInfo(NamedTuple):
  loss: jax.Array


def make_toy(config: ToyConfig, flow, target, n_steps: int,
             max_target_evals: Optional[int] = None) -> Method:
  opt = optax.sgd(config.learning_rate)

  def init(key, params):
    del key
    return TrainState(params, opt.init(params), (), jnp.zeros((), jnp.int32))

  def step(key, state):
    def loss_fn(p):
      x, log_q = flow.sample_and_log_prob(p, key, config.batch_size)
      return jnp.mean(log_q - target.log_prob(x))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, (), state.step + 1), ToyInfo(loss=loss)

  return Method(name="toy", init=init, step=step, evals_per_step=config.evals_per_step,
                grad_steps_per_step=1, n_steps=n_steps, max_target_evals=max_target_evals)


TOY = MethodSpec(name="toy", config=ToyConfig, make=make_toy,
                 summary=lambda records, cfg, target: {"toy_final_loss": records[-1]["loss"]})


@pytest.fixture
def toy():
  register(TOY)
  try:
    yield TOY
  finally:
    unregister("toy")


def test_a_registered_toy_method_runs_end_to_end(toy, tmp_path):
  from cmtjax.runner import run
  assert "toy" in method_names()
  cfg = build_config([{"target": "double_well2d", "method": "toy", "max_target_evals": 640,
                       "toy": {"batch_size": 64}, "flow": {"n_layers": 2, "hidden": [8]},
                       "cmt": {"eps_tr": 0.2},  # another method's section: checked, dropped
                       "eval": {"n_samples": 500, "n_repeats": 1, "every": 0},
                       "checkpoint": {"enabled": False}}])
  assert cfg.method_config == ToyConfig(batch_size=64)
  metrics = run(cfg, str(tmp_path), progress=False)
  assert metrics["method"] == "toy" and metrics["target_evals"] == 640
  assert metrics["n_steps"] == 10 and "toy_final_loss" in metrics
  saved = load_file(str(tmp_path / "config.json"))
  assert saved["toy"] == {"batch_size": 64, "learning_rate": 1e-3}
  assert not {"cmt", "fab", "tabg", "reverse_kl", "forward_kl"} & set(saved)
  assert build_config([saved]) == cfg
  assert (tmp_path / "training.png").is_file()


def test_register_refuses_taken_names_and_bad_configs(toy):
  with pytest.raises(ValueError, match="taken"):
    register(toy)
  with pytest.raises(ValueError, match="taken"):
    register(dataclasses.replace(toy, name="flow"))
  with pytest.raises(TypeError, match="evals_per_step"):
    register(dataclasses.replace(toy, name="toy2", config=TOY_BAD))
  with pytest.raises(TypeError, match="takes a ToyConfig"):
    make_method("toy", TINY, None, None, 1)


@dataclasses.dataclass(frozen=True)
class TOY_BAD:  # noqa: N801 - a config class without evals_per_step
  batch_size: int = 1
