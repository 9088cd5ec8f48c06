"""Reverse-KL training (min KL(q_θ ‖ p)) as a :class:`~cmtjax.train.state.Method`.

Each step runs K optimiser steps inside one ``lax.scan``; each optimiser step draws a
reparameterised batch of B model samples (B target evaluations) and minimises
mean[log q_θ(x) − log p̃(x)]. As in the molecular baselines of CMT.md §6, the ``drop_top``
samples of highest energy (lowest log p̃) of each batch can be left out of the loss, and the
gradient is clipped. Mode-seeking: expect it to lose modes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from cmtjax.methods.registry import MethodSpec
from cmtjax.metrics import reverse_ess
from cmtjax.targets.base import Target
from cmtjax.train.sharding import shard_batch
from cmtjax.train.fit import clipped_adam, optimizer_steps
from cmtjax.train.state import Method, TrainState

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ReverseKLConfig:
  """Hyperparameters of reverse-KL training.

  Attributes:
    batch_size: model samples (= target evaluations) per optimiser step.
    n_grad_steps: optimiser steps per outer iteration (one jitted scan).
    learning_rate: Adam learning rate.
    drop_top: samples of highest energy left out of each batch's loss.
    grad_clip: global-norm gradient clipping (0 disables).
  """

  batch_size: int = 1024
  n_grad_steps: int = 100
  learning_rate: float = 1e-3
  drop_top: int = 0
  grad_clip: float = 100.0

  def __post_init__(self):
    if self.batch_size < 1 or self.n_grad_steps < 1:
      raise ValueError("reverse_kl.batch_size and reverse_kl.n_grad_steps must be >= 1")
    if not 0 <= self.drop_top < self.batch_size:
      raise ValueError(f"reverse_kl.drop_top must be in [0, batch_size), got {self.drop_top}")
    if not self.learning_rate > 0:
      raise ValueError(f"reverse_kl.learning_rate must be > 0, got {self.learning_rate}")

  @property
  def evals_per_step(self) -> int:
    """Target evaluations of one outer step: ``B · K``."""
    return int(self.batch_size) * int(self.n_grad_steps)


class ReverseKLInfo(NamedTuple):
  """Diagnostics of one outer iteration.

  Attributes:
    loss: loss of the last batch.
    batch_ess: reverse ESS of the last batch.
    n_skipped: optimiser steps skipped (non-finite loss or gradient).
    n_invalid: samples of all K batches with a non-finite log p̃ or log q (left out of the loss).
  """

  loss: Array
  batch_ess: Array
  n_skipped: Array
  n_invalid: Array


def reverse_kl_loss(flow, target: Target, params, key: Array, batch_size: int, *,
                    drop_top: int = 0, log_p_scale=1.0,
                    shard: Callable[[Array], Array] = lambda a: a) -> tuple[Array, tuple]:
  """The reparameterised reverse-KL loss on one batch of model samples.

  mean[log q_θ(x) − s · log p̃(x)] over the batch's finite samples (s = ``log_p_scale``:
  TA-BG's inverse temperature ratio), leaving out the ``drop_top`` samples of lowest
  s · log p̃. With no finite sample the loss is NaN, so that the optimiser step is skipped
  (and counted) rather than taken on an empty batch.

  Args:
    flow: the flow (``sample_and_log_prob``, differentiable in ``params``).
    target: the target (``batch_size`` evaluations).
    params: flow parameters (differentiated).
    key: PRNG key.
    batch_size: B (static).
    drop_top: samples of highest energy left out (static).
    log_p_scale: s (may be traced).
    shard: places a batch on the devices (identity on one device).

  Returns:
    ``(loss, (log_w, n_invalid))``: ``log_w = log p̃ − log q`` of the batch (no gradient)
    and the number of samples with a non-finite log p̃ or log q.
  """
  x, log_q = shard(flow.sample_and_log_prob(params, key, batch_size))
  log_p = shard(target.log_prob(x))
  log_w = jax.lax.stop_gradient(log_p - log_q)
  finite = jnp.isfinite(log_p) & jnp.isfinite(log_q)
  per_sample = log_q - log_p_scale * log_p
  if drop_top:  # keep the samples of lowest energy; non-finite ones go first
    score = jnp.where(finite, jax.lax.stop_gradient(log_p_scale * log_p), -jnp.inf)
    _, idx = jax.lax.top_k(score, batch_size - drop_top)
    per_sample, ok = per_sample[idx], finite[idx]
  else:
    ok = finite
  n_ok = jnp.sum(ok)
  loss = jnp.sum(jnp.where(ok, per_sample, 0.0)) / jnp.maximum(n_ok, 1)
  loss = jnp.where(n_ok > 0, loss, jnp.nan)
  return loss, (log_w, jnp.sum((~finite).astype(jnp.int32)))


def make_reverse_kl(config: ReverseKLConfig, flow, target: Target, n_steps: int,
                    max_target_evals: Optional[int] = None) -> Method:
  """Builds the reverse-KL method (see module docstring)."""
  optimizer = clipped_adam(config.learning_rate, config.grad_clip)
  b = int(config.batch_size)

  def loss_fn(params, key):
    return reverse_kl_loss(flow, target, params, key, b, drop_top=int(config.drop_top),
                           shard=shard_batch)

  def init(key: Array, params) -> TrainState:
    del key
    return TrainState.initial(params, optimizer)

  def step(key: Array, state: TrainState):
    res = optimizer_steps(optimizer, loss_fn, state.params, state.opt_state, key,
                          config.n_grad_steps)
    log_ws, n_bad = res.aux
    info = ReverseKLInfo(loss=res.losses[-1], batch_ess=reverse_ess(log_ws[-1]),
                         n_skipped=res.n_skipped, n_invalid=jnp.sum(n_bad))
    return state.next(res.params, res.opt_state), info

  return Method(name="reverse_kl", init=init, step=step, evals_per_step=config.evals_per_step,
                grad_steps_per_step=int(config.n_grad_steps), n_steps=int(n_steps),
                max_target_evals=max_target_evals)


SPEC = MethodSpec(name="reverse_kl", config=ReverseKLConfig, make=make_reverse_kl)
