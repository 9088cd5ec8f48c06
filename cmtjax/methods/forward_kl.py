"""Forward KL (maximum likelihood) on reference samples, as a Method for the one loop.

min_θ KL(p ‖ q_θ) = −E_p[log q_θ] + const, estimated on samples of p. Each optimiser step
draws a fresh batch of B reference samples from ``target.sample`` (exact samples for the
synthetic targets), so the flow never sees the same sample twice and the loss is unbiased.

For a molecule, whose target has no exact sampler, the samples are the frames of its reference
set (replica-exchange MD; the set the evaluation uses unless ``reference`` names another),
drawn uniformly with replacement: the oracle row of a comparison. By default it trains on the
frames of the even-numbered walkers only (``hold_out_walkers``): the evaluation then measures
its forward figures (EUBO, NLL, forward ESS) on the odd walkers' frames, which it never saw.
Measured on its own training frames they would reward memorising them (with a few thousand
frames, a flow reaches an NLL far below the target's entropy and an EUBO below log Z).

Budget accounting: forward KL never evaluates log p̃; it is charged the cost of its reference
samples instead, ``cost_per_sample`` target evaluations per sample (default 1: an exact
sampler is credited as cheap as one energy evaluation, which flatters forward KL; for
reference data from MD, set it to the MD steps spent per decorrelated sample). One outer
step therefore costs ``B · K · cost_per_sample`` target evaluations and K optimiser steps.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from cmtjax.methods.registry import MethodSpec
from cmtjax.targets.base import Target
from cmtjax.train.fit import clipped_adam, optimizer_steps
from cmtjax.train.state import Method, TrainState

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ForwardKLConfig:
  """Hyperparameters of forward-KL training.

  Attributes:
    batch_size: B, reference samples per optimiser step.
    n_grad_steps: K, optimiser steps per outer step.
    learning_rate: Adam learning rate.
    grad_clip: global-norm gradient clipping (0 disables).
    cost_per_sample: target evaluations charged per reference sample (>= 1).
    reference: molecules: the reference ``.npz`` to train on (None: the molecule's cached or
      shipped set, as ``cmtjax evaluate`` finds it).
    hold_out_walkers: molecules: train on the frames of even-numbered walkers only and leave
      the odd ones to the evaluation's forward figures (False: train on every frame; the
      forward figures are then measured on training frames).
  """

  batch_size: int = 1024
  n_grad_steps: int = 100
  learning_rate: float = 1e-3
  grad_clip: float = 100.0
  cost_per_sample: int = 1
  reference: Optional[str] = None
  hold_out_walkers: bool = True

  def __post_init__(self):
    for name in ("batch_size", "n_grad_steps", "cost_per_sample"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"forward_kl.{name} must be >= 1, got {getattr(self, name)!r}")
    if not self.learning_rate > 0:
      raise ValueError(f"forward_kl.learning_rate must be > 0, got {self.learning_rate!r}")
    if self.grad_clip < 0:
      raise ValueError(f"forward_kl.grad_clip must be >= 0, got {self.grad_clip!r}")

  def held_out_reference(self, walker):
    """[m] bool: the reference frames (of walkers ``walker`` [m]) left out of training, on
    which the evaluation measures the forward figures; None when none are left out."""
    if not self.hold_out_walkers:
      return None
    import numpy as np
    return ~_training_walkers(np.asarray(walker))

  @property
  def evals_per_step(self) -> int:
    """Target evaluations charged per outer step: ``B · K · cost_per_sample``."""
    return int(self.batch_size) * int(self.n_grad_steps) * int(self.cost_per_sample)


class ForwardKLInfo(NamedTuple):
  """Diagnostics of one outer step: mean NLL (−log q) of the last tenth of the batches, and
  optimiser steps skipped for a non-finite gradient."""

  loss: Array
  n_skipped: Array


def make_forward_kl(config: ForwardKLConfig, flow, target: Target, n_steps: int,
                    max_target_evals: Optional[int] = None) -> Method:
  """Builds forward-KL training on ``target.sample``.

  Raises:
    ValueError: the target has no ``sample`` (no reference samples).
  """
  sample = target.sample
  if sample is None and target.molecule is not None:
    sample = reference_sampler(target, config.reference,
                               hold_out_walkers=config.hold_out_walkers)
  if sample is None:
    raise ValueError(f"forward_kl needs reference samples, but target {target.name!r} has no "
                     f"sample(); use a synthetic target with exact samples or a molecule "
                     f"with a reference set")
  optimizer = clipped_adam(config.learning_rate, config.grad_clip)
  b, k_steps = int(config.batch_size), int(config.n_grad_steps)

  def init(key: Array, params) -> TrainState:
    del key
    return TrainState.initial(params, optimizer)

  def step(key: Array, state: TrainState) -> tuple[TrainState, ForwardKLInfo]:
    def loss_fn(p, x):
      lq = flow.log_prob(p, x)
      ok = jnp.isfinite(lq)
      return -jnp.sum(jnp.where(ok, lq, 0.0)) / jnp.maximum(jnp.sum(ok), 1)

    def batch_loss(p, k):
      return loss_fn(p, jax.lax.stop_gradient(sample(k, b))), ()

    res = optimizer_steps(optimizer, batch_loss, state.params, state.opt_state, key, k_steps)
    tail = max(1, k_steps // 10)
    return (state.next(res.params, res.opt_state),
            ForwardKLInfo(loss=jnp.mean(res.losses[-tail:]), n_skipped=res.n_skipped))

  return Method(name="forward_kl", init=init, step=step, evals_per_step=config.evals_per_step,
                grad_steps_per_step=k_steps, n_steps=int(n_steps),
                max_target_evals=max_target_evals)


def _training_walkers(walker):
  """[m] bool: frames of even-numbered walkers (the training half of a held-out split)."""
  return walker % 2 == 0


def reference_sampler(target: Target, path: Optional[str] = None, *,
                      hold_out_walkers: bool = False):
  """``(key, n) -> [n, dim]``: frames of a molecule's reference set drawn uniformly with
  replacement (with ``hold_out_walkers``, of its even-numbered walkers only).

  Raises:
    FileNotFoundError: the molecule has no reference set (the message names the command that
      generates one).
    ValueError: the set belongs to another force field or temperature.
  """
  from cmtjax.targets.molecules.reference import load_target_reference, reference_mismatch
  found = load_target_reference(target, path)
  mismatch = reference_mismatch(found, target)
  if mismatch is not None:
    raise ValueError(f"forward_kl on {found.path}: {mismatch}")
  frames = found.positions
  if hold_out_walkers:
    import numpy as np
    train = _training_walkers(np.asarray(found.walker))
    if train.all() or not train.any():
      raise ValueError(f"forward_kl: {found.path} has frames of "
                       f"{'even' if train.any() else 'odd'}-numbered walkers only, so none can "
                       f"be held out; set forward_kl.hold_out_walkers=false")
    frames = frames[train]
  frames = jnp.asarray(frames, jnp.float32)

  def sample(key: Array, n: int) -> Array:
    return frames[jax.random.randint(key, (n,), 0, frames.shape[0])]

  return sample


SPEC = MethodSpec(name="forward_kl", config=ForwardKLConfig, make=make_forward_kl)
