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

Early stopping (``early_stopping``, on by default for reference frames): a finite set of
frames is memorised once the budget allows many passes over it (on alanine dipeptide, 64,000
frames memorised by 1.1e7 evaluations: training NLL far below the held-out one). Every fourth
training walker is set aside as a validation set; after each outer step the NLL of (up to
``validation_frames`` of) its frames is measured, and the state's parameters are the best so
far by that figure, while the optimiser carries on from the latest ones. The validation
frames are part of the reference set, not extra samples, and cost no target evaluations; the
evaluation's held-out walkers are never used for the choice. Exact samplers (the synthetic
targets) draw fresh samples every step and need none of this.

Budget accounting: forward KL never evaluates log p̃; it is charged the cost of its reference
samples instead, ``cost_per_sample`` target evaluations per sample (default 1: an exact
sampler is credited as cheap as one energy evaluation, which flatters forward KL; for
reference data from MD, set it to the MD steps spent per decorrelated sample). One outer
step therefore costs ``B · K · cost_per_sample`` target evaluations and K optimiser steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.flows.flow import in_blocks
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
    early_stopping: molecules: keep every fourth training walker's frames for validation and
      return the parameters of the outer step with the lowest validation NLL.
    validation_frames: most validation frames measured per outer step (a fixed, evenly
      spaced subset when there are more).
  """

  batch_size: int = 1024
  n_grad_steps: int = 100
  learning_rate: float = 1e-3
  grad_clip: float = 100.0
  cost_per_sample: int = 1
  reference: Optional[str] = None
  hold_out_walkers: bool = True
  early_stopping: bool = True
  validation_frames: int = 4096

  def __post_init__(self):
    for name in ("batch_size", "n_grad_steps", "cost_per_sample", "validation_frames"):
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
    return ~_training_walkers(np.asarray(walker))

  @property
  def evals_per_step(self) -> int:
    """Target evaluations charged per outer step: ``B · K · cost_per_sample``."""
    return int(self.batch_size) * int(self.n_grad_steps) * int(self.cost_per_sample)


class ForwardKLInfo(NamedTuple):
  """Diagnostics of one outer step: mean NLL (−log q) of the last tenth of the batches,
  optimiser steps skipped for a non-finite gradient, and with early stopping the validation
  NLL of this step's parameters and the best so far (NaN without)."""

  loss: Array
  n_skipped: Array
  val_nll: Array
  best_val_nll: Array


class EarlyStopping(NamedTuple):
  """``method_state`` of forward KL with early stopping: the optimiser's latest parameters
  (the state's ``params`` are the best ones) and the best validation NLL so far."""

  latest: Any
  best_val_nll: Array


def make_forward_kl(config: ForwardKLConfig, flow, target: Target, n_steps: int,
                    max_target_evals: Optional[int] = None) -> Method:
  """Builds forward-KL training on ``target.sample``.

  Raises:
    ValueError: the target has no ``sample`` (no reference samples).
  """
  sample, validation = target.sample, None
  if sample is None and target.molecule is not None:
    train_frames, validation = reference_frames(target, config.reference,
                                                hold_out_walkers=config.hold_out_walkers,
                                                validation=config.early_stopping)
    sample = _uniform_draws(train_frames)
  if sample is None:
    raise ValueError(f"forward_kl needs reference samples, but target {target.name!r} has no "
                     f"sample(); use a synthetic target with exact samples or a molecule "
                     f"with a reference set")
  if validation is not None and validation.shape[0] > config.validation_frames:
    every = np.linspace(0, validation.shape[0] - 1, config.validation_frames).astype(int)
    validation = validation[every]
  optimizer = clipped_adam(config.learning_rate, config.grad_clip)
  b, k_steps = int(config.batch_size), int(config.n_grad_steps)

  def loss_fn(p, x):
    return _finite_mean_nll(flow.log_prob(p, x))

  scored = in_blocks(flow, 1024)  # the validation frames, scored in blocks

  def init(key: Array, params) -> TrainState:
    del key
    if validation is None:
      return TrainState.initial(params, optimizer)
    # A copy: the loop donates the state's buffers, and one buffer cannot be donated twice.
    latest = jax.tree_util.tree_map(jnp.copy, params)
    return TrainState.initial(params, optimizer,
                              EarlyStopping(latest=latest, best_val_nll=jnp.array(jnp.inf)))

  def step(key: Array, state: TrainState) -> tuple[TrainState, ForwardKLInfo]:
    def batch_loss(p, k):
      return loss_fn(p, jax.lax.stop_gradient(sample(k, b))), ()

    start = state.params if validation is None else state.method_state.latest
    res = optimizer_steps(optimizer, batch_loss, start, state.opt_state, key, k_steps)
    tail = max(1, k_steps // 10)
    loss = jnp.mean(res.losses[-tail:])
    if validation is None:
      nan = jnp.array(jnp.nan)
      return (state.next(res.params, res.opt_state),
              ForwardKLInfo(loss=loss, n_skipped=res.n_skipped, val_nll=nan, best_val_nll=nan))
    val = _finite_mean_nll(scored.log_prob(res.params, validation))
    better = val < state.method_state.best_val_nll
    best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), res.params,
                                  state.params)
    best_val = jnp.where(better, val, state.method_state.best_val_nll)
    return (state.next(best, res.opt_state, EarlyStopping(latest=res.params,
                                                          best_val_nll=best_val)),
            ForwardKLInfo(loss=loss, n_skipped=res.n_skipped, val_nll=val,
                          best_val_nll=best_val))

  return Method(name="forward_kl", init=init, step=step, evals_per_step=config.evals_per_step,
                grad_steps_per_step=k_steps, n_steps=int(n_steps),
                max_target_evals=max_target_evals)


def _finite_mean_nll(log_q: Array) -> Array:
  """Mean −log q over the finite entries of ``log_q`` (frames outside the flow's support
  left out)."""
  ok = jnp.isfinite(log_q)
  return -jnp.sum(jnp.where(ok, log_q, 0.0)) / jnp.maximum(jnp.sum(ok), 1)


def _training_walkers(walker):
  """[m] bool: frames of even-numbered walkers (the training half of a held-out split)."""
  return walker % 2 == 0


def _validation_walkers(training_walkers):
  """Every fourth of the training walkers (sorted): the early-stopping validation set."""
  return np.sort(np.unique(training_walkers))[3::4]


def reference_frames(target: Target, path: Optional[str] = None, *,
                     hold_out_walkers: bool = False, validation: bool = False):
  """``(training frames [n, dim], validation frames [m, dim] or None)`` of a molecule's
  reference set: with ``hold_out_walkers`` the frames of its even-numbered walkers only, and
  with ``validation`` every fourth of those walkers set aside for early stopping.

  Raises:
    FileNotFoundError: the molecule has no reference set (the message names the command that
      generates one).
    ValueError: the set belongs to another force field or temperature, or has too few walkers
      to hold any out.
  """
  from cmtjax.targets.molecules.reference import load_target_reference, reference_mismatch
  found = load_target_reference(target, path)
  mismatch = reference_mismatch(found, target)
  if mismatch is not None:
    raise ValueError(f"forward_kl on {found.path}: {mismatch}")
  frames, walker = found.positions, np.asarray(found.walker)
  train = np.ones(walker.shape, bool)
  if hold_out_walkers:
    train = _training_walkers(walker)
    if train.all() or not train.any():
      raise ValueError(f"forward_kl: {found.path} has frames of "
                       f"{'even' if train.any() else 'odd'}-numbered walkers only, so none can "
                       f"be held out; set forward_kl.hold_out_walkers=false")
  val_frames = None
  if validation:
    val = train & np.isin(walker, _validation_walkers(walker[train]))
    if not val.any():
      raise ValueError(f"forward_kl: {found.path} has {len(np.unique(walker[train]))} "
                       f"training walker(s), too few to set every fourth aside for early "
                       f"stopping; set forward_kl.early_stopping=false")
    train, val_frames = train & ~val, jnp.asarray(frames[val], jnp.float32)
  return jnp.asarray(frames[train], jnp.float32), val_frames


def _uniform_draws(frames: Array):
  """``(key, n) -> [n, dim]``: rows of ``frames`` drawn uniformly with replacement."""
  def sample(key: Array, n: int) -> Array:
    return frames[jax.random.randint(key, (n,), 0, frames.shape[0])]
  return sample


def reference_sampler(target: Target, path: Optional[str] = None, *,
                      hold_out_walkers: bool = False):
  """``(key, n) -> [n, dim]``: frames of a molecule's reference set drawn uniformly with
  replacement (with ``hold_out_walkers``, of its even-numbered walkers only); see
  :func:`reference_frames` for the errors."""
  return _uniform_draws(reference_frames(target, path, hold_out_walkers=hold_out_walkers)[0])


SPEC = MethodSpec(name="forward_kl", config=ForwardKLConfig, make=make_forward_kl)
