"""Flow annealed importance sampling bootstrap (FAB, α = 2) as a Method for the one loop.

FAB minimises the α = 2 divergence D_2(p ‖ q_θ) = log ∫ p²/q_θ, whose gradient is

    ∇_θ D_2 ∝ −E_{g}[∇_θ log q_θ(x)],        g = p²/q_θ  (held fixed while differentiating),

the expectation under the minimum-variance importance proposal g. AIS from q_θ toward
g ∝ q^{−1} p̃² (:mod:`cmtjax.sampling.ais`, α = 2) draws weighted samples of g; a prioritised
replay buffer (:mod:`cmtjax.sampling.buffer`) keeps them, and the loss of a minibatch drawn
∝ w from the buffer is −mean log q_θ(x). After every optimiser step the drawn samples are
re-weighted to the new flow (log w += log q_old − log q_new).

One outer step:
  1. x_0 ~ q_θ (n chains), AIS with M intermediate distributions and H HMC steps of L
     leapfrog steps each: ``n · (1 + M·H·L)`` target evaluations (log p̃ with its gradient,
     each counted once; see :func:`cmtjax.sampling.ais_target_evals`); nothing else in the
     step evaluates the target;
  2. the AIS samples enter the buffer (oldest block overwritten);
  3. K optimiser steps on buffer minibatches (B samples without replacement, ∝ w), each
     followed by the re-weighting of the drawn samples;
  4. the HMC step size of each intermediate distribution moves toward a target acceptance
     (log ε ← log ε + rate · (acceptance − target)).
The importance weights p̃/q of the fresh flow samples x_0 come for free and give the
step's ``batch_ess``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.methods.registry import MethodSpec
from cmtjax.metrics import reverse_ess
from cmtjax.sampling import (SPACINGS, ReplayBuffer, adapt_step_sizes, ais, ais_betas,
                             ais_target_evals, buffer_add, buffer_adjust, buffer_init,
                             buffer_sample, log_z_of_p)
from cmtjax.targets.base import Target
from cmtjax.train.fit import clipped_adam, optimizer_steps
from cmtjax.train.state import Method, TrainState

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FABConfig:
  """Hyperparameters of FAB.

  Attributes:
    n_ais_samples: AIS chains per outer step (n).
    n_intermediate: M, intermediate distributions between q and p̃²/q (8 as in CMT.md §6).
    n_hmc_steps: H, HMC steps per intermediate distribution.
    n_leapfrog: L, leapfrog steps per HMC step.
    spacing: β schedule of the intermediate distributions, ``"linear"`` or ``"geometric"``.
    init_step_size: initial HMC step size (all intermediate distributions).
    target_acceptance: acceptance the step sizes are adapted toward.
    adapt_rate: rate of the multiplicative step-size adaptation (0 freezes it).
    buffer_capacity: replay-buffer slots (a multiple of ``n_ais_samples``).
    batch_size: B, buffer samples per optimiser step (≤ ``n_ais_samples``).
    n_grad_steps: K, optimiser steps per outer step (AIS dominates the cost of a step: on
      GMM-40 at 4e5 evaluations, K = 32 reached reverse ESS 0.41 and 40/40 modes against
      0.24 and 39/40 for K = 8, for 17 % more wall time).
    learning_rate: Adam learning rate.
    grad_clip: global-norm gradient clipping (0 disables).
  """

  n_ais_samples: int = 1024
  n_intermediate: int = 8
  n_hmc_steps: int = 1
  n_leapfrog: int = 5
  spacing: str = "linear"
  init_step_size: float = 0.1
  target_acceptance: float = 0.65
  adapt_rate: float = 0.5
  buffer_capacity: int = 16384
  batch_size: int = 512
  n_grad_steps: int = 32
  learning_rate: float = 1e-3
  grad_clip: float = 100.0

  def __post_init__(self):
    for name in ("n_ais_samples", "n_hmc_steps", "n_leapfrog", "buffer_capacity",
                 "batch_size", "n_grad_steps"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"fab.{name} must be >= 1, got {getattr(self, name)!r}")
    if self.n_intermediate < 1:
      raise ValueError(f"fab.n_intermediate must be >= 1, got {self.n_intermediate!r}")
    if self.spacing not in SPACINGS:
      raise ValueError(f"fab.spacing: unknown {self.spacing!r}; known: {', '.join(SPACINGS)}")
    if self.buffer_capacity % self.n_ais_samples:
      raise ValueError(f"fab.buffer_capacity ({self.buffer_capacity}) must be a multiple of "
                       f"fab.n_ais_samples ({self.n_ais_samples})")
    if self.batch_size > self.n_ais_samples:
      raise ValueError(f"fab.batch_size ({self.batch_size}) must be <= fab.n_ais_samples "
                       f"({self.n_ais_samples}): the first step's buffer holds only one block")
    if not 0 < self.target_acceptance < 1:
      raise ValueError(f"fab.target_acceptance must be in (0, 1), got {self.target_acceptance}")
    for name in ("init_step_size", "learning_rate"):
      if not getattr(self, name) > 0:
        raise ValueError(f"fab.{name} must be > 0, got {getattr(self, name)!r}")
    if self.adapt_rate < 0 or self.grad_clip < 0:
      raise ValueError("fab.adapt_rate and fab.grad_clip must be >= 0")

  @property
  def evals_per_step(self) -> int:
    """Target evaluations of one outer step: ``n · (1 + M·H·L)``."""
    return ais_target_evals(self.n_ais_samples, self.n_intermediate, self.n_hmc_steps,
                            self.n_leapfrog)


class FABState(NamedTuple):
  """FAB's own state: the replay buffer and the per-distribution HMC step sizes ``[M]``."""

  buffer: ReplayBuffer
  step_sizes: Array


class FABInfo(NamedTuple):
  """Diagnostics of one FAB step (scalars).

  Attributes:
    loss: mean minibatch loss −mean log q_θ over the K steps.
    batch_ess: reverse ESS of p̃/q on the step's fresh flow samples x_0.
    ais_ess: ESS of the AIS weights (toward p̃²/q).
    ais_log_z: log mean AIS weight (estimates log ∫ p̃²/q).
    log_z: FAB's estimate of log Z = log ∫ p̃ from the same run
      (:func:`cmtjax.sampling.log_z_of_p`).
    acceptance: mean HMC acceptance over the intermediate distributions.
    step_size: geometric mean of the step sizes used.
    n_invalid: target evaluations spent on AIS chains whose weight is not finite (the
      chains are dropped; each cost 1 + M·H·L evaluations), so that it equals
      ``evals_per_step`` when nothing usable came out of the step.
    buffer_size: filled buffer slots.
    n_skipped: optimiser steps skipped for a non-finite gradient.
  """

  loss: Array
  batch_ess: Array
  ais_ess: Array
  ais_log_z: Array
  log_z: Array
  acceptance: Array
  step_size: Array
  n_invalid: Array
  buffer_size: Array
  n_skipped: Array


def make_fab(config: FABConfig, flow, target: Target, n_steps: int,
             max_target_evals: Optional[int] = None) -> Method:
  """Builds FAB (see module docstring).

  Args:
    config: FAB hyperparameters.
    flow: a :class:`cmtjax.flows.Flow`; its ``log_prob`` must be differentiable in x.
    target: the target (log p̃ and its gradient are evaluated inside AIS only).
    n_steps: planned outer steps.

  Returns:
    The :class:`Method` (``evals_per_step = n·(1 + M·H·L)``, ``grad_steps_per_step = K``).
  """
  optimizer = clipped_adam(config.learning_rate, config.grad_clip)
  betas = ais_betas(config.n_intermediate, config.spacing)
  n, b, m = int(config.n_ais_samples), int(config.batch_size), int(config.n_intermediate)
  per_chain = config.evals_per_step // n

  def init(key: Array, params) -> TrainState:
    del key
    ms = FABState(buffer=buffer_init(config.buffer_capacity, target.dim),
                  step_sizes=jnp.full((m,), config.init_step_size, jnp.float32))
    return TrainState.initial(params, optimizer, ms)

  def step(key: Array, state: TrainState) -> tuple[TrainState, FABInfo]:
    ms: FABState = state.method_state
    k_x0, k_ais, k_fit = jax.random.split(key, 3)
    frozen = jax.lax.stop_gradient(state.params)
    x0, _ = flow.sample_and_log_prob(frozen, k_x0, n)
    x0 = jax.lax.stop_gradient(x0)
    res = ais(k_ais, x0, lambda x: flow.log_prob(frozen, x), target.log_prob,
              betas=betas, step_sizes=ms.step_sizes, alpha=2.0,
              n_hmc_steps=config.n_hmc_steps, n_leapfrog=config.n_leapfrog)
    buf = buffer_add(ms.buffer, res.x, res.log_w, res.log_q)

    def loss_fn(p, k, bf):
      idx, ok = buffer_sample(bf, k, b)
      x = bf.x[idx]
      lq = flow.log_prob(p, x)
      good = ok & jnp.isfinite(lq)
      loss = -jnp.sum(jnp.where(good, lq, 0.0)) / jnp.maximum(jnp.sum(good), 1)
      return loss, (idx, ok, x)

    def adjust(bf, p, aux):  # the drawn points' log q under the updated flow
      idx, ok, x = aux
      return buffer_adjust(bf, idx, jnp.where(ok, flow.log_prob(p, x), -jnp.inf))

    fit = optimizer_steps(optimizer, loss_fn, state.params, state.opt_state, k_fit,
                          config.n_grad_steps, extra=buf, update_extra=adjust)
    params, opt_state, buf, skipped, losses = (fit.params, fit.opt_state, fit.extra,
                                               fit.n_skipped, fit.losses)
    step_sizes = adapt_step_sizes(ms.step_sizes, res.acceptance, config.target_acceptance,
                                  config.adapt_rate)
    info = FABInfo(
        loss=jnp.mean(losses), batch_ess=reverse_ess(res.x0_log_w),
        ais_ess=reverse_ess(res.log_w), ais_log_z=res.log_z, log_z=log_z_of_p(res, 2.0),
        acceptance=jnp.mean(res.acceptance),
        step_size=jnp.exp(jnp.mean(jnp.log(ms.step_sizes))),
        n_invalid=(jnp.sum(~jnp.isfinite(res.log_w)) * per_chain).astype(jnp.int32),
        buffer_size=buf.size, n_skipped=skipped)
    return state.next(params, opt_state, FABState(buffer=buf, step_sizes=step_sizes)), info

  return Method(name="fab", init=init, step=step, evals_per_step=config.evals_per_step,
                grad_steps_per_step=int(config.n_grad_steps), n_steps=int(n_steps),
                max_target_evals=max_target_evals)


def fab_summary(records: list, config: FABConfig, target: Target) -> dict:
  """FAB's own evidence estimate (AIS toward p̃²/q): the median over the last tenth of the
  steps (one AIS batch per step is noisy), and its error where the true log Z is known."""
  del config
  tail = [r["log_z"] for r in records[-max(1, len(records) // 10):]
          if r.get("log_z") is not None and math.isfinite(float(r["log_z"]))]
  out = {"ais_log_z": float(np.median(tail)) if tail else None}
  if tail and target.log_Z is not None:
    out["ais_log_z_error"] = out["ais_log_z"] - float(target.log_Z)
  return out


SPEC = MethodSpec(name="fab", config=FABConfig, make=make_fab, summary=fab_summary)
