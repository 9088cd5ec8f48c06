"""Temperature-annealed Boltzmann generators (TA-BG, CMT.md §6) as one Method for the loop.

Two phases inside one jitted step (switched by ``lax.cond`` on the step counter):

  1. reverse KL at the highest temperature T_0 = T_max, for ``n_reverse_kl_steps`` outer
     steps (default: ``reverse_kl_fraction`` of the planned steps): K optimiser steps, each on a reparameterised batch of N/K flow samples, loss
     mean[log q − log p̃_{T_0}];
  2. a temperature ladder T_0 > T_1 > … > T_R = T (the target's temperature). Rung r
     (r = 1 … R) lasts ``steps_per_rung`` outer steps (default: the ladder is spread evenly
     over the budget left after phase 1); each draws N flow samples, computes
     log w = log p̃_{T_r} − log q, clips the largest ``clip_fraction`` of the weights (rounded down:
     :func:`cmtjax.metrics.weights.clip_largest_log_weights`) to the
     largest weight below them, resamples a buffer of ``buffer_size`` samples ∝ the clipped
     weights, and fits the flow to it by maximum likelihood (K optimiser steps, uniform
     minibatches of ``batch_size``). After the last rung the same update keeps refining at
     T until the budget ends.

Temperatures: log p̃_T = (T_target / T) · log p̃, i.e. p̃^{1/τ} with τ = T / T_target. For a
molecular target at 300 K this is the Boltzmann density at T (energies above the cap
excepted); for synthetic targets "temperature" means exactly this power. The default ladder,
geometric from 1200 K to 300 K in 9 steps, is the paper's molecular ladder
(1200, 1028.69, 881.84, …, 349.96, 300 K); for a synthetic target it means τ from 4 to 1.

Budget accounting: both phases cost exactly N target evaluations and K optimiser steps per
outer step (phase 1 draws K batches of N/K, so N must be a multiple of K), which keeps
``evals_per_step`` and ``grad_steps_per_step`` static and exact.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.methods.registry import MethodSpec
from cmtjax.methods.reverse_kl import reverse_kl_loss
from cmtjax.metrics import reverse_ess
from cmtjax.metrics.weights import clip_largest_log_weights
from cmtjax.sampling.resampling import cumulative_weights, resample_indices
from cmtjax.sampling.temperatures import geometric_ladder
from cmtjax.targets.base import Target
from cmtjax.train.fit import (fit_weighted, make_optimizer, optimizer_steps,
                              with_learning_rate)
from cmtjax.train.state import Method, TrainState

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TABGConfig:
  """Hyperparameters of TA-BG.

  Attributes:
    t_max: highest temperature T_0 (K): reverse KL happens here.
    t_target: the target's temperature T (K): the ladder ends here.
    n_temperatures: temperatures of the geometric ladder, both ends included (10: 9 steps).
    temperatures: explicit ladder (K, strictly decreasing, ending at ``t_target``); when
      given it replaces ``t_max`` / ``n_temperatures``.
    n_reverse_kl_steps: outer steps of phase 1 (None: ``reverse_kl_fraction`` of the planned
      outer steps, at least one).
    reverse_kl_fraction: share of the planned outer steps spent in phase 1 when
      ``n_reverse_kl_steps`` is None.
    steps_per_rung: outer steps spent at each lower temperature of the ladder (0: spread
      the ladder evenly over the planned steps after phase 1, at least one per rung).
    n_samples: N, flow samples (= target evaluations) per outer step, both phases.
    n_grad_steps: K, optimiser steps per outer step, both phases (N must be a multiple of K).
    buffer_size: samples resampled into the maximum-likelihood buffer per outer step.
    batch_size: minibatch size of the maximum-likelihood fit.
    clip_fraction: fraction of the largest importance weights clipped (1e-4 in the paper).
    reverse_kl_learning_rate: Adam learning rate of phase 1.
    learning_rate: Adam learning rate of phase 2.
    grad_clip: global-norm gradient clipping (0 disables).
  """

  t_max: float = 1200.0
  t_target: float = 300.0
  n_temperatures: int = 10
  temperatures: tuple[float, ...] = ()
  n_reverse_kl_steps: Optional[int] = None
  reverse_kl_fraction: float = 0.1
  steps_per_rung: int = 0
  n_samples: int = 10_240
  n_grad_steps: int = 40
  buffer_size: int = 10_240
  batch_size: int = 1024
  clip_fraction: float = 1e-4
  reverse_kl_learning_rate: float = 1e-3
  learning_rate: float = 1e-3
  grad_clip: float = 100.0

  def __post_init__(self):
    if isinstance(self.temperatures, list):
      object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
    for name in ("n_samples", "n_grad_steps", "buffer_size", "batch_size"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"tabg.{name} must be >= 1, got {getattr(self, name)!r}")
    if (self.n_reverse_kl_steps is not None and self.n_reverse_kl_steps < 0) or (
        self.steps_per_rung < 0):
      raise ValueError(f"tabg.n_reverse_kl_steps and tabg.steps_per_rung must be >= 0, got "
                       f"{self.n_reverse_kl_steps} and {self.steps_per_rung}")
    if not 0 <= self.reverse_kl_fraction < 1:
      raise ValueError(f"tabg.reverse_kl_fraction must be in [0, 1), got "
                       f"{self.reverse_kl_fraction}")
    if self.n_samples % self.n_grad_steps:
      raise ValueError(
          f"tabg.n_samples ({self.n_samples}) must be a multiple of tabg.n_grad_steps "
          f"({self.n_grad_steps}): a reverse-KL step draws n_samples/n_grad_steps samples per "
          f"optimiser step so that both phases cost the same per outer step")
    if not 0 <= self.clip_fraction < 1:
      raise ValueError(f"tabg.clip_fraction must be in [0, 1), got {self.clip_fraction}")
    for name in ("t_max", "t_target", "reverse_kl_learning_rate", "learning_rate"):
      if not getattr(self, name) > 0:
        raise ValueError(f"tabg.{name} must be > 0, got {getattr(self, name)!r}")
    if self.grad_clip < 0:
      raise ValueError(f"tabg.grad_clip must be >= 0, got {self.grad_clip}")
    if self.temperatures:
      t = self.temperatures
      if len(t) < 2 or any(not b < a for a, b in zip(t, t[1:])) or min(t) <= 0:
        raise ValueError(f"tabg.temperatures must be >= 2 positive, strictly decreasing "
                         f"values, got {list(t)}")
      if not math.isclose(t[-1], self.t_target, rel_tol=1e-9):
        raise ValueError(f"tabg.temperatures must end at tabg.t_target ({self.t_target}), "
                         f"got {t[-1]}")
    else:
      if self.n_temperatures < 2:
        raise ValueError(f"tabg.n_temperatures must be >= 2, got {self.n_temperatures}")
      if not self.t_max >= self.t_target > 0:
        raise ValueError(f"tabg needs t_max >= t_target > 0, got t_max={self.t_max}, "
                         f"t_target={self.t_target}")

  @property
  def evals_per_step(self) -> int:
    """Target evaluations of one outer step: N (both phases)."""
    return int(self.n_samples)

  def ladder(self) -> np.ndarray:
    """The temperatures T_0 > … > T_R (K): ``[R + 1]``."""
    if self.temperatures:
      return np.asarray(self.temperatures, np.float64)
    return geometric_ladder(self.t_target, self.t_max, self.n_temperatures)[::-1].copy()

  def reverse_kl_steps(self, n_steps: int) -> int:
    """Outer steps of phase 1 when ``n_steps`` outer steps are planned."""
    if self.n_reverse_kl_steps is not None:
      return int(self.n_reverse_kl_steps)
    return max(1, int(round(self.reverse_kl_fraction * int(n_steps))))

  def rung_steps(self, n_steps: int) -> int:
    """Outer steps per rung when ``n_steps`` outer steps are planned."""
    if self.steps_per_rung:
      return int(self.steps_per_rung)
    n_rungs = len(self.ladder()) - 1
    return max(1, (int(n_steps) - self.reverse_kl_steps(n_steps)) // n_rungs)

  def schedule(self, n_steps: int) -> np.ndarray:
    """Temperature (K) each of the first outer steps trains toward, phase 1 and the ladder:
    ``[reverse_kl_steps + R · rung_steps]``; later steps refine at ``t_target``."""
    ladder = self.ladder()
    return np.concatenate([np.full(self.reverse_kl_steps(n_steps), ladder[0]),
                           np.repeat(ladder[1:], self.rung_steps(n_steps))])


class TABGInfo(NamedTuple):
  """Diagnostics of one TA-BG step (scalars).

  Attributes:
    phase: 0 (reverse KL at T_0) or 1 (ladder / refinement).
    temperature: temperature (K) the step trains toward.
    loss: phase 1: last batch's reverse-KL loss; phase 2: the fit's final loss.
    batch_ess: ESS of p̃/q (target temperature) on the step's last batch of flow samples.
    step_ess: ESS of the clipped weights toward p̃_T (phase 2; 1 in phase 1).
    n_clipped: weights lowered by the clipping.
    n_invalid: samples with a non-finite log weight (dropped).
    n_skipped: optimiser steps skipped for a non-finite gradient.
    learning_rate: learning rate of the step.
  """

  phase: Array
  temperature: Array
  loss: Array
  batch_ess: Array
  step_ess: Array
  n_clipped: Array
  n_invalid: Array
  n_skipped: Array
  learning_rate: Array


def make_tabg(config: TABGConfig, flow, target: Target, n_steps: int,
              max_target_evals: Optional[int] = None) -> Method:
  """Builds TA-BG (see module docstring).

  Args:
    config: TA-BG hyperparameters.
    flow: a :class:`cmtjax.flows.Flow`.
    target: the target at temperature ``config.t_target``.
    n_steps: planned outer steps (steps beyond :meth:`TABGConfig.schedule` refine at T).

  Returns:
    The :class:`Method` (``evals_per_step = N``, ``grad_steps_per_step = K``).
  """
  optimizer = make_optimizer(config.reverse_kl_learning_rate, config.grad_clip)
  # Temperature of each outer step's goal, indexed by the step counter.
  temps = jnp.asarray(config.schedule(n_steps), jnp.float32)
  n, k_steps = int(config.n_samples), int(config.n_grad_steps)
  rkl_batch = n // k_steps
  n_rkl = config.reverse_kl_steps(n_steps)

  def init(key: Array, params) -> TrainState:
    del key
    return TrainState.initial(params, optimizer)

  def reverse_kl_phase(key, params, opt_state, temp):
    factor = config.t_target / temp

    def loss_fn(p, k):
      return reverse_kl_loss(flow, target, p, k, rkl_batch, log_p_scale=factor)

    opt_state = with_learning_rate(opt_state, config.reverse_kl_learning_rate)
    res = optimizer_steps(optimizer, loss_fn, params, opt_state, key, k_steps)
    params, opt_state, skipped, losses = res.params, res.opt_state, res.n_skipped, res.losses
    log_ws, n_bad = res.aux
    n_invalid = jnp.sum(n_bad).astype(jnp.int32)
    return params, opt_state, (losses[-1], reverse_ess(log_ws[-1]), jnp.ones(()),
                               jnp.zeros((), jnp.int32), n_invalid, skipped)

  def anneal_phase(key, params, opt_state, temp):
    factor = config.t_target / temp
    k_sample, k_res, k_fit = jax.random.split(key, 3)
    x, lq = flow.sample_and_log_prob(jax.lax.stop_gradient(params), k_sample, n)
    x, lq = jax.lax.stop_gradient(x), jax.lax.stop_gradient(lq)
    lp = target.log_prob(x)
    ok = jnp.isfinite(lp) & jnp.isfinite(lq) & jnp.all(jnp.isfinite(x), axis=-1)
    log_w = jnp.where(ok, factor * lp - lq, -jnp.inf)
    clipped, n_clipped = clip_largest_log_weights(log_w, config.clip_fraction)
    idx = resample_indices(k_res, cumulative_weights(clipped), config.buffer_size)
    x_buf = jnp.where(ok[:, None], x, 0.0)[idx]
    uniform = jnp.full((config.buffer_size,), -math.log(config.buffer_size), x.dtype)
    opt_state = with_learning_rate(opt_state, config.learning_rate)
    params, opt_state, fit = fit_weighted(
        flow.log_prob, optimizer, params, opt_state, k_fit, x_buf, uniform,
        n_steps=k_steps, batch_size=config.batch_size, mode="weighted")
    batch_ess = reverse_ess(jnp.where(ok, lp - lq, -jnp.inf))
    return params, opt_state, (fit.loss_last, batch_ess, reverse_ess(clipped), n_clipped,
                               jnp.sum(~ok).astype(jnp.int32), fit.n_skipped)

  def step(key: Array, state: TrainState) -> tuple[TrainState, TABGInfo]:
    if temps.shape[0]:
      temp = jnp.where(state.step < temps.shape[0],
                       temps[jnp.minimum(state.step, temps.shape[0] - 1)],
                       config.t_target).astype(jnp.float32)
    else:
      temp = jnp.asarray(config.t_target, jnp.float32)
    phase1 = state.step < n_rkl
    params, opt_state, figs = jax.lax.cond(
        phase1, reverse_kl_phase, anneal_phase, key, state.params, state.opt_state, temp)
    loss, batch_ess, step_ess, n_clipped, n_invalid, skipped = figs
    info = TABGInfo(
        phase=jnp.where(phase1, 0, 1).astype(jnp.int32), temperature=temp, loss=loss,
        batch_ess=batch_ess, step_ess=step_ess, n_clipped=n_clipped, n_invalid=n_invalid,
        n_skipped=skipped,
        learning_rate=jnp.where(phase1, config.reverse_kl_learning_rate, config.learning_rate))
    return state.next(params, opt_state), info

  return Method(name="tabg", init=init, step=step, evals_per_step=config.evals_per_step,
                grad_steps_per_step=k_steps, n_steps=int(n_steps),
                max_target_evals=max_target_evals)


SPEC = MethodSpec(name="tabg", config=TABGConfig, make=make_tabg)
