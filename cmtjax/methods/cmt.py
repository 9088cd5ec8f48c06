"""Constrained Mass Transport as a :class:`~cmtjax.train.state.Method` (Algorithm 1).

One step (the pieces are in :mod:`cmtjax.cmt.kernel` and :mod:`cmtjax.cmt.diagnostics`):
  1. ``draw_buffer``: N samples of the current flow q̂_i with log q̂_i(x) and log p̃(x): N
     target evaluations, non-finite entries masked and counted;
  2. choose (λ_i, η_i): the dual (jitted, warm-started from the previous step), a fixed
     schedule's table, or λ = η = 0 once the target is reached or imposed;
  3. the kernel: fit q̂_{i+1} to q_{i+1} ∝ q̂_i^{λ/s} p̃^{1/s} by importance-weighted forward
     KL (K steps; skipped when the buffer holds no valid sample);
  4. log what was requested (KL̂, entropy drop on the buffer) and what the fit realised
     (KL and entropy drop of the fitted flow, estimated on the same buffer).

Ending the path (CMT.md §3 leaves this open; both are supported):
  * adaptive (default): once the solver returns λ = η = 0 the path has reached p; with
    ``stop_adapting_at_target`` the dual is no longer solved and every later step fits
    p̃ directly (weights p̃/q̂), refining at the target until the budget ends;
  * fixed I (``anneal_steps = I``): the constrained path is followed for at most I steps; from
    step I on, λ = η = 0 is imposed (the remaining budget refines at the target).
Once at the target, the learning rate follows a cosine decay from ``learning_rate`` to
``final_learning_rate`` over the remaining steps (the largest single gain seen on GMM-40).
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.cmt.diagnostics import basin_diagnostics, fit_diagnostics, mode_diagnostics
from cmtjax.cmt.dual import (bisect_ess_floor, dual_stats, lam_for_min_ess,
                             normalised_log_weights)
from cmtjax.cmt.kernel import (Multipliers, StepMasks, adaptive_multipliers, draw_buffer,
                               make_kernel, scheduled_multipliers, target_multipliers)
from cmtjax.cmt.paths import PATHS, PathState, init_path, path_constraints, update_path
from cmtjax.cmt.solver import SolverConfig
from cmtjax.methods.registry import MethodSpec
from cmtjax.methods.schedules import SCHEDULES, fixed_multipliers
from cmtjax.metrics import reverse_ess
from cmtjax.targets.base import Target
from cmtjax.train.fit import FIT_MODES, make_optimizer, with_learning_rate
from cmtjax.train.sharding import shard_batch
from cmtjax.train.state import Method, TrainState

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CMTConfig:
  """Hyperparameters of CMT.

  Attributes:
    path: one of ``"geometric_tempered"`` (both constraints, the default), ``"geometric"``
      (trust region only), ``"tempered"`` (entropy only), ``"none"``.
    eps_tr: trust-region bound ε_tr on KL(q_{i+1} ‖ q_i) per step (nats).
    eps_ent: bound ε_ent on the entropy decrease per step (nats).
    n_samples: buffer size N (= target evaluations per step) once the path has reached the
      target (the refinement phase), and while annealing unless ``n_samples_annealing`` is set.
    n_samples_annealing: buffer size while annealing (before the target is reached; with a
      fixed I or a fixed schedule, during the first I steps); None: ``n_samples``. The
      annealing steps decide which modes the flow keeps: a broad early flow puts only a few
      samples of N on a small remote mode, and a mode that a buffer misses gets no weight in
      the next fit and is lost for good (docs/coverage.md). A larger annealing buffer costs
      target evaluations and sampling time, not fit time.
    n_grad_steps: K, optimiser steps per annealing step.
    batch_size: minibatch size of the fit.
    fit_mode: ``"resample"`` or ``"weighted"`` (see :mod:`cmtjax.train.fit`).
    learning_rate: Adam learning rate while annealing.
    final_learning_rate: learning rate reached by the cosine decay at the end of the run,
      once the target is reached or, with ``plan_budget``, once the annealing share of the
      budget is spent (equal to ``learning_rate`` disables the decay).
    grad_clip: global-norm gradient clipping (0 disables).
    anneal_steps: fixed-I mode: impose λ = η = 0 from this step on (None: adaptive).
    stop_adapting_at_target: once λ = η = 0, stop solving the dual.
    solver_rtol: relative tolerance of the dual's constraints.
    solver_n_grid: candidate multipliers evaluated at once to bracket each root (0: none).
    schedule: ``"adaptive"`` (CMT: multipliers from the dual) or a fixed schedule of
      :mod:`cmtjax.methods.schedules` (``"linear_beta"``, ``"geometric_beta"``: geometric
      path; ``"geometric_temperature"``: tempered path), which replaces the dual solve and
      ignores ``path``, ``eps_tr`` and ``eps_ent``.
    schedule_steps: I, the number of annealing steps of a fixed schedule.
    schedule_beta_min: first positive β of ``"geometric_beta"``.
    schedule_t_max_ratio: T_max / T of ``"geometric_temperature"``.
    plan_budget: budget-aware annealing (adaptive schedule only): the path must reach the
      target within (1 − ``refine_fraction``) of the run's target evaluations. From the third
      annealing step on, the steps still needed are estimated from the path's progress
      p = αβ (the exponent of p̃ in q_i ∝ q_0^{1−β} p̃^{αβ}, 0 at q_0, 1 at the target) and
      its rate (the larger of the mean and the last step's gain); when they exceed the
      annealing steps the budget has left, ε_tr and ε_ent are scaled by (needed / left)²
      (progress per step grows like √ε), at most by ``max_eps_scale`` and by twice the
      previous step's factor. The last annealing step the budget allows jumps to the target
      (λ = η = 0) if the buffer's weights p̃/q̂ keep a step ESS of at least
      ``plan_jump_min_ess``; otherwise the path goes on (a jump from too far collapses the
      flow: on alanine dipeptide at 2e6 evaluations a jump at ESS 0.015 ended at ESS 2e-5)
      and the run may end before the target; the learning rate's decay starts there all the
      same.
    refine_fraction: share of the budget kept for steps at the target when ``plan_budget``
      (with ``plan_anneal_evals``: at least this share).
    plan_anneal_evals: target evaluations the annealing may spend when ``plan_budget``,
      whatever the budget (None: (1 − ``refine_fraction``) of it), capped at
      (1 − ``refine_fraction``) of it. A path needs about as many steps at any budget, so a
      preset that names the annealing's own cost plans the same path at 2e6 as at 1e7 and
      gives the rest to the refinement; a pure fraction tuned for one budget starves the
      path at a smaller one.
    max_eps_scale: largest factor on ε_tr and ε_ent when ``plan_budget``.
    plan_jump_min_ess: smallest step ESS of the planned jump to the target.
    refine_min_ess: at the target (the steps after the one that reached it), the smallest
      step ESS a fit may rest on (0: no floor).
      A step whose weights p̃/q̂ fall below it is tempered, w ∝ (p̃/q̂)^τ with τ < 1 the
      largest that keeps this ESS (λ raised from 0; the path stays at the target, the step
      fits a distribution between the flow and p̃). The KL trust region does not see a few
      heavy weights (KL̂ stays small while the ESS collapses), and a fit that draws a few
      samples hundreds of times can put a narrow peak on them: on alanine dipeptide (seed 1)
      the cis Ala–Nme isomer's weight collapsed after one such step (ESS 0.16), and a floor
      of 0.3 did not prevent it (docs/molecules.md).
    fit_weight_cap: the fit's weights are capped at this multiple of the uniform share 1/N
      and normalised again (truncated importance weights; 0: no cap), so that no one buffer
      sample is drawn into the fit's minibatches more than about this many times as often as
      a uniform draw would take it. The step's distribution, its ESS and the diagnostics use
      the weights as they are. Applies to every step.
    refine_skip_ess: at the target (the steps after the one that reached it), a step whose
      weights p̃/q̂ have an ESS below this fits nothing: its target evaluations are spent,
      the flow and the optimiser state stay as they were, and the next step draws a fresh
      buffer (``fit_skipped`` in the step records; 0: never). A buffer whose weights
      collapse onto a few samples is the one a fit would put a narrow peak on.
    anchor: ρ in [0, 1], how far each step's distribution is anchored to the path's ideal
      intermediate (0: the paper's step, relative to the fitted flow). The step relative to
      the flow is q_{i+1} ∝ q̂_i^a p̃^b (a = λ/s, b = 1/s); the path's bookkeeping assumes
      q̂_i = q_i ∝ q_0^{1−β_i} p̃^{α_i β_i}, and with a finite fit it is not: mass a fit lost
      (a small basin) is missing from every later intermediate, since each is a power of the
      flow that lost it (on the tetrapeptide the φ > 0 basins drain during the annealing,
      docs/molecules.md). An anchored step fits q_{i+1} · (q_i / q̂_i)^{ρ a}: at ρ = 1 the
      ideal intermediate q_i^a p̃^b itself (the fit's errors then do not accumulate along
      the path; mass the flow lost is weighted back up wherever its samples still reach),
      between 0 and 1 a geometric blend. It costs one evaluation of q_0 on the buffer
      (``Flow.initial_log_prob``: the fixed maps alone). The dual, its constraints and the
      logged ``kl``, ``entropy_drop`` and ``step_ess`` stay those of the relative step;
      ``fit_ess`` is the ESS of the weights the fit uses. Each fit also moves the flow off
      the path by its own noise (on the tetrapeptide a fit asked for a tilt of 1e-7 realised
      an ESS of 0.02), which the ideal intermediate counts as error too: a full anchor can
      leave the fit a few heavy weights. So ρ is lowered on a step (bisection, ``anchor_rho``
      in the step records) until the fit's weights keep at least ``anchor_min_ess_ratio`` of
      the step ESS. The anchor acts while the path anneals (progress α_i β_i < 0.999 and the
      target not reached): from there on the ideal model is p̃ itself, and an anchored step
      would fit p̃ with the weights p̃/q̂ whatever the trust region asks, so the steps at (or
      next to) the target stay relative. At the target (λ = 0) the two coincide anyway.
    anchor_min_ess_ratio: the smallest fit ESS of an anchored step, as a fraction of its
      step ESS (see ``anchor``).
    fit_average: each fit returns the mean of its last ``fit_average`` · K iterates instead
      of the last one (iterate averaging; 0: the last iterate). Adam moves every weight by
      about the learning rate whatever the buffer asks, so a fit asked for a small step also
      moves the flow by its minibatch noise: on the tetrapeptide at 1e-3 the realised step's
      weights q̂_{i+1}/q̂_i had an ESS of ~1e-4 on steps that asked for 0.3 nats. The mean of
      the tail iterates keeps the fit's drift and averages that noise out; the optimiser's
      moments carry over from the last iterate, and the next fit starts from the mean.
    diagnostics_samples: the realised KL, entropy drop and fit KL logged per step are
      estimated on the first this many buffer entries (a uniform subsample: the buffer is
      i.i.d.), which costs one density evaluation each after the fit; 0: the whole buffer.
  """

  path: str = "geometric_tempered"
  eps_tr: float = 0.3
  eps_ent: float = 0.5
  n_samples: int = 10_000
  n_samples_annealing: Optional[int] = None
  n_grad_steps: int = 100
  batch_size: int = 1024
  fit_mode: str = "resample"
  learning_rate: float = 1e-3
  final_learning_rate: float = 1e-5
  grad_clip: float = 100.0
  anneal_steps: Optional[int] = None
  stop_adapting_at_target: bool = True
  solver_rtol: float = 1e-4
  solver_n_grid: int = 0
  schedule: str = "adaptive"
  schedule_steps: Optional[int] = None
  schedule_beta_min: float = 1e-3
  schedule_t_max_ratio: float = 4.0
  diagnostics_samples: int = 10_000
  plan_budget: bool = False
  refine_fraction: float = 0.2
  plan_anneal_evals: Optional[int] = None
  max_eps_scale: float = 16.0
  plan_jump_min_ess: float = 0.05
  refine_min_ess: float = 0.0
  fit_weight_cap: float = 0.0
  refine_skip_ess: float = 0.0
  anchor: float = 0.0
  anchor_min_ess_ratio: float = 0.5
  fit_average: float = 0.0

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"cmt.schedule: unknown {self.schedule!r}; known: {', '.join(SCHEDULES)}")
    if self.schedule != "adaptive" and (self.schedule_steps is None or self.schedule_steps < 1):
      raise ValueError(f"cmt.schedule_steps must be >= 1 for the fixed schedule "
                       f"{self.schedule!r}, got {self.schedule_steps!r}")
    if not 0 < self.schedule_beta_min < 1:
      raise ValueError(f"cmt.schedule_beta_min must be in (0, 1), got {self.schedule_beta_min}")
    if not self.schedule_t_max_ratio >= 1:
      raise ValueError(f"cmt.schedule_t_max_ratio must be >= 1, got "
                       f"{self.schedule_t_max_ratio}")
    if self.path not in PATHS:
      raise ValueError(f"cmt.path: unknown path {self.path!r}; known: {', '.join(PATHS)}")
    if self.fit_mode not in FIT_MODES:
      raise ValueError(f"cmt.fit_mode: unknown {self.fit_mode!r}; known: {', '.join(FIT_MODES)}")
    for name in ("eps_tr", "eps_ent", "learning_rate", "final_learning_rate", "solver_rtol"):
      if not getattr(self, name) > 0:
        raise ValueError(f"cmt.{name} must be > 0, got {getattr(self, name)!r}")
    for name in ("n_samples", "n_grad_steps", "batch_size"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"cmt.{name} must be >= 1, got {getattr(self, name)!r}")
    if self.n_samples_annealing is not None and int(self.n_samples_annealing) < 1:
      raise ValueError(f"cmt.n_samples_annealing must be >= 1 or null, got "
                       f"{self.n_samples_annealing!r}")
    if self.anneal_steps is not None and self.anneal_steps < 0:
      raise ValueError(f"cmt.anneal_steps must be >= 0 or null, got {self.anneal_steps!r}")
    if self.diagnostics_samples < 0:
      raise ValueError(f"cmt.diagnostics_samples must be >= 0, got {self.diagnostics_samples!r}")
    if not 0 <= self.refine_fraction < 1:
      raise ValueError(f"cmt.refine_fraction must be in [0, 1), got {self.refine_fraction!r}")
    if self.plan_anneal_evals is not None and int(self.plan_anneal_evals) < 1:
      raise ValueError(f"cmt.plan_anneal_evals must be >= 1 or null, got "
                       f"{self.plan_anneal_evals!r}")
    if not 0 <= self.refine_min_ess < 1:
      raise ValueError(f"cmt.refine_min_ess must be in [0, 1), got {self.refine_min_ess!r}")
    if not (self.fit_weight_cap == 0 or self.fit_weight_cap > 1):
      raise ValueError(f"cmt.fit_weight_cap must be 0 (no cap) or > 1 (a multiple of the "
                       f"uniform weight 1/N), got {self.fit_weight_cap!r}")
    if not 0 <= self.refine_skip_ess < 1:
      raise ValueError(f"cmt.refine_skip_ess must be in [0, 1), got {self.refine_skip_ess!r}")
    if not 0 <= self.fit_average <= 1:
      raise ValueError(f"cmt.fit_average must be in [0, 1], got {self.fit_average!r}")
    if not 0 <= self.anchor <= 1:
      raise ValueError(f"cmt.anchor must be in [0, 1], got {self.anchor!r}")
    if not 0 <= self.anchor_min_ess_ratio <= 1:
      raise ValueError(f"cmt.anchor_min_ess_ratio must be in [0, 1], got "
                       f"{self.anchor_min_ess_ratio!r}")
    if not 0 <= self.plan_jump_min_ess <= 1:
      raise ValueError(f"cmt.plan_jump_min_ess must be in [0, 1], got "
                       f"{self.plan_jump_min_ess!r}")
    if not self.max_eps_scale >= 1:
      raise ValueError(f"cmt.max_eps_scale must be >= 1, got {self.max_eps_scale!r}")
    if self.grad_clip < 0 or self.solver_n_grid < 0:
      raise ValueError("cmt.grad_clip and cmt.solver_n_grid must be >= 0")

  @property
  def evals_per_step(self) -> int:
    """Target evaluations of a step at the target: N (while annealing, the loop asks the
    method's ``step_evals``)."""
    return int(self.n_samples)


class CMTState(NamedTuple):
  """CMT's own state between steps.

  Attributes:
    lam: λ of the previous step (warm start).
    eta: η of the previous step (warm start).
    path: (α, β) of the current model's place on the path.
    at_target: True once λ = η = 0 has been reached (or imposed).
    target_step: step at which the target was reached (−1 before).
    n_annealing_steps: steps taken while annealing (with the annealing buffer size).
    last_gain: progress αβ gained by the last annealing step (for ``plan_budget``).
    eps_scale: the factor on ε of the last step (for ``plan_budget``).
    budget: the budget the run plans for (:class:`BudgetPlan`); the loop may change it
      between steps (``Method.with_budget``: a run planned to end within a time limit).
  """

  lam: Array
  eta: Array
  path: PathState
  at_target: Array
  target_step: Array
  n_annealing_steps: Array
  last_gain: Array
  eps_scale: Array
  budget: "BudgetPlan"


class BudgetPlan(NamedTuple):
  """The budget a CMT run plans for, in its state (computed on the host, so a run whose
  budget never changes plans exactly as with a static one).

  Attributes:
    evals: target evaluations of the whole run (float32).
    anneal_evals: target evaluations the annealing may spend (with ``plan_budget``).
    anneal_steps: annealing steps those allow; the learning rate's decay starts there at the
      latest (with ``plan_budget``; int32).
    steps: the most steps of N samples the budget allows (int32; the cosine decay's horizon
      when every step draws N).
  """

  evals: Array
  anneal_evals: Array
  anneal_steps: Array
  steps: Array


class CMTInfo(NamedTuple):
  """Diagnostics of one CMT step (scalars, and the per-residue basin shares below).

  ``kl``, ``entropy_drop`` and ``step_ess`` are what the chosen q_{i+1} asks for on the buffer;
  ``n_evals`` is the step's number of target evaluations (its buffer size);
  ``fit_skipped`` is True where the step fitted nothing on purpose (``refine_skip_ess``).
  ``realised_*`` are what the fitted flow achieved (estimated on the same buffer by
  self-normalised importance sampling; ``realised_ess``, the ESS fraction of those weights,
  says how far to trust them); ``fit_kl`` estimates KL(q_{i+1} ‖ q̂_{i+1}).
  For targets with known modes, ``modes_buffer`` counts the modes holding at least a quarter
  of their true share among the buffer's samples (q̂_i) and ``modes_weighted`` under the
  weights w̄ (q_{i+1}), and ``sparsest_mode_samples`` the buffer samples nearest to the
  least-sampled mode (a mode at 0 gets no weight in the fit); all −1 for other targets.
  For molecules, ``phi_pos_buffer`` and ``phi_pos_weighted`` are the shares of the buffer and
  of w̄ with backbone φ ≥ 0, one per residue ([n_pairs]; [0] for other targets), and
  ``cis_buffer`` and ``cis_weighted`` the same for a cis peptide bond, one per bond.
  ``fit_ess`` is the ESS fraction of the weights the fit uses (``step_ess`` unless the step
  is anchored, :attr:`CMTConfig.anchor`; the fit's cap, if any, not applied), ``anchor_rho``
  the anchor's ρ on the step (0 when not anchored).
  """

  lam: Array
  eta: Array
  alpha: Array
  beta: Array
  kl: Array
  entropy_drop: Array
  step_ess: Array
  entropy: Array
  step_log_z: Array
  dual_iterations: Array
  dual_converged: Array
  n_invalid: Array
  realised_kl: Array
  realised_entropy_drop: Array
  fit_kl: Array
  realised_ess: Array
  loss: Array
  n_skipped: Array
  learning_rate: Array
  at_target: Array
  modes_buffer: Array
  modes_weighted: Array
  sparsest_mode_samples: Array
  phi_pos_buffer: Array
  phi_pos_weighted: Array
  cis_buffer: Array
  cis_weighted: Array
  n_evals: Array
  eps_scale: Array
  fit_skipped: Array
  fit_ess: Array
  anchor_rho: Array


# The anchor acts while the path's progress αβ is below this (CMTConfig.anchor).
_ANCHOR_PROGRESS_END = 0.999
_ANCHOR_BISECTIONS = 24


def anchor_rho(log_wbar: Array, shift: Array, rho_max: float, min_ess: Array) -> Array:
  """The largest ρ in [0, ``rho_max``] whose weights w̄ e^{ρ shift} (normalised) keep an ESS
  fraction of at least ``min_ess`` (bisection; 0 where even a small ρ does not, ``rho_max``
  where it does). ``log_wbar`` is −inf on the rows that do not count."""
  def ess(rho):  # invalid rows carry −inf in log_wbar and drop out
    return reverse_ess(log_wbar + rho * shift)

  rho_max = jnp.asarray(rho_max, log_wbar.dtype)
  lo = bisect_ess_floor(ess, rho_max, min_ess, _ANCHOR_BISECTIONS)
  return jnp.where(ess(rho_max) >= min_ess, rho_max, lo)


def anchor_shift(buf, path: PathState, log_q0: Array, lam: Array, eta: Array,
                 rho: float) -> Array:
  """The anchored step's log-weight shift ρ a (log q_i − log q̂_i) on the buffer (``[N]``,
  centred on the valid rows; see :attr:`CMTConfig.anchor`).

  log q_i = (1 − β_i) log q_0 + α_i β_i log p̃ is the path's ideal model at (α_i, β_i) (up to
  its normaliser, which the weights' normalisation removes), a = λ / (1 + λ + η). A row where
  q_0 has no mass (while β_i < 1) gets no weight from the ideal intermediate; it is given a
  shift of −1e4 rather than −inf, so that a buffer with no other row stays defined.
  """
  beta, alpha = path.beta, path.alpha
  q0_part = jnp.where(beta < 1, (1.0 - beta) * log_q0, 0.0)
  gap = q0_part + alpha * beta * buf.log_p - buf.log_q
  ok = buf.valid & jnp.isfinite(gap)
  centre = jnp.sum(jnp.where(ok, gap, 0.0)) / jnp.maximum(jnp.sum(ok), 1).astype(gap.dtype)
  a = lam / (1.0 + lam + eta)
  return jnp.where(ok, rho * a * (gap - centre), -1e4).astype(buf.log_q.dtype)



def _cosine(lr0, lr1, progress):
  progress = jnp.clip(progress, 0.0, 1.0)
  return lr1 + 0.5 * (lr0 - lr1) * (1.0 + jnp.cos(jnp.pi * progress))


def make_cmt(config: CMTConfig, flow, target: Target, n_steps: int,
             max_target_evals: Optional[int] = None) -> Method:
  """Builds the CMT method.

  Args:
    config: CMT hyperparameters.
    flow: a :class:`cmtjax.flows.Flow` (``sample_and_log_prob``, ``log_prob``).
    target: the target; its ``log_prob`` is evaluated N times per step.
    n_steps: the most outer steps the run may take (with ``n_samples_annealing`` unset, the
      planned number; it sets the cosine decay's horizon unless a smaller budget is planned,
      ``Method.with_budget``).
    max_target_evals: the run's budget of target evaluations. With a larger annealing
      buffer the number of steps depends on when the target is reached; the loop stops at
      the budget and the cosine decay ends there. None: ``n_steps`` steps.

  Returns:
    The :class:`Method`.
  """
  use_tr, use_ent = path_constraints(config.path)
  if config.anchor > 0 and getattr(flow, "initial_log_prob", None) is None:
    raise ValueError("cmt.anchor > 0 needs the flow's density at its initial parameters "
                     "(Flow.initial_log_prob), which this flow does not provide: set "
                     "cmt.anchor = 0")
  optimizer = make_optimizer(config.learning_rate, config.grad_clip)
  solver_cfg = SolverConfig(rtol=config.solver_rtol, n_grid=config.solver_n_grid)
  n = int(config.n_samples)
  n_anneal = int(config.n_samples_annealing or n)
  n_buf = max(n, n_anneal)  # buffer length: a smaller draw is padded with masked entries
  budget = None if max_target_evals is None else int(max_target_evals)
  if budget is not None and n_anneal > budget:
    raise ValueError(f"budget too small: max_target_evals={budget} allows no annealing step "
                     f"of cmt.n_samples_annealing={n_anneal} target evaluations")
  kernel = make_kernel(flow.log_prob, optimizer, n_grad_steps=int(config.n_grad_steps),
                       batch_size=int(config.batch_size), fit_mode=config.fit_mode,
                       weight_cap=float(config.fit_weight_cap),
                       average_tail=int(round(config.fit_average * int(config.n_grad_steps))),
                       shard=shard_batch)
  # Diagnostics use the first rows of the buffer, always drawn whatever the step's size.
  n_diag = min(n, n_anneal)
  if config.diagnostics_samples:
    n_diag = min(n_diag, int(config.diagnostics_samples))
  table = None
  if config.schedule != "adaptive":
    table = jnp.asarray(fixed_multipliers(
        config.schedule, int(config.schedule_steps), beta_min=config.schedule_beta_min,
        t_max_ratio=config.schedule_t_max_ratio), jnp.float32)

  def init(key: Array, params) -> TrainState:
    del key
    ms = CMTState(lam=jnp.ones(()), eta=jnp.ones(()), path=init_path(),
                  at_target=jnp.array(False), target_step=jnp.array(-1, jnp.int32),
                  n_annealing_steps=jnp.zeros((), jnp.int32), last_gain=jnp.zeros(()),
                  eps_scale=jnp.ones(()), budget=budget_plan_for(
                      budget if budget is not None else int(n_steps) * n_anneal))
    return TrainState.initial(params, optimizer, ms)

  def with_budget(state: TrainState, max_target_evals: int) -> TrainState:
    """The state planning for another budget from now on (a run that must end within a time
    limit); read on the host between steps."""
    ms = state.method_state
    return state._replace(method_state=ms._replace(budget=budget_plan_for(max_target_evals)))

  def imposed(state: TrainState) -> Array:
    """True once a fixed I or a fixed schedule imposes λ = η = 0."""
    done = jnp.array(False)
    if config.anneal_steps is not None:
      done = done | (state.step >= config.anneal_steps)
    if table is not None:
      done = done | (state.step >= table.shape[0])
    return done

  def annealing(state: TrainState) -> Array:
    """True while the path is followed (the target not yet reached or imposed)."""
    return ~(state.method_state.at_target | imposed(state))

  def step_evals(state: TrainState) -> int:
    """Target evaluations of the next step (read on the host)."""
    return n_anneal if bool(annealing(state)) else n

  def choose_multipliers(buf, previous: Multipliers, step_index, eps_scale) -> Multipliers:
    """The rule of the path: a fixed schedule's table, or the dual (warm-started)."""
    if table is not None:
      return scheduled_multipliers(table, step_index)
    return adaptive_multipliers(buf, config.eps_tr * eps_scale, config.eps_ent * eps_scale,
                                previous, use_trust_region=use_tr, use_entropy=use_ent,
                                solver=solver_cfg)

  # Target evaluations the annealing may use when planning (see CMTConfig.plan_budget).
  plan = config.plan_budget and table is None

  def budget_plan_for(evals: int) -> BudgetPlan:
    """The state's :class:`BudgetPlan` for a run of ``evals`` target evaluations (host)."""
    plan_evals = (1.0 - config.refine_fraction) * evals
    if config.plan_anneal_evals is not None:
      plan_evals = min(plan_evals, float(config.plan_anneal_evals))
    return BudgetPlan(evals=jnp.asarray(evals, jnp.float32),
                      anneal_evals=jnp.asarray(plan_evals, jnp.float32),
                      anneal_steps=jnp.asarray(int(plan_evals // n_anneal), jnp.int32),
                      steps=jnp.asarray(min(int(n_steps), int(evals) // n), jnp.int32))

  def budget_plan(ms: CMTState, is_annealing):
    """``(ε scale, impose the target now)`` of this step."""
    if not plan:
      return jnp.ones(()), jnp.array(False)
    done = ms.n_annealing_steps.astype(jnp.float32)
    left = jnp.floor((ms.budget.anneal_evals - done * n_anneal) / n_anneal)  # this step too
    progress = ms.path.alpha * ms.path.beta
    rate = jnp.maximum(progress / jnp.maximum(done, 1.0), ms.last_gain)
    needed = (1.0 - progress) / jnp.maximum(rate, 1e-6)
    scale = jnp.clip((needed / jnp.maximum(left, 1.0)) ** 2, 1.0, config.max_eps_scale)
    # At most doubling from one step to the next: the early rate underestimates how fast the
    # path accelerates, and one step at the full factor can collapse the step's ESS.
    scale = jnp.minimum(scale, 2.0 * ms.eps_scale)
    scale = jnp.where(done >= 2, scale, 1.0)
    return scale, is_annealing & (left <= 1)

  def learning_rate(step_index, at_target, target_step, n_annealing_steps, bp: BudgetPlan):
    """``learning_rate`` while annealing; at the target (with ``plan_budget``: at the latest
    once the annealing share is spent), a cosine decay to ``final_learning_rate`` over the
    steps the run has left."""
    total = jnp.asarray(n_steps, jnp.float32)
    if n_anneal == n:  # a lowered budget (a time limit) shortens the run
      total = bp.steps.astype(jnp.float32)
    elif budget is not None:
      # Steps the budget allows: those of N_annealing so far, then steps of N.
      a = n_annealing_steps.astype(jnp.float32)
      total = jnp.minimum(total, a + jnp.floor((bp.evals - a * n_anneal) / n))
    start = jnp.where(at_target, target_step, jnp.iinfo(jnp.int32).max)
    if plan:
      # With the plan, the refinement's decay starts where the annealing share of the budget
      # ends even when the target was not reached (a refused jump): the path then goes on at
      # a decaying learning rate instead of at the annealing one until the budget runs out.
      start = jnp.minimum(start, bp.anneal_steps)
    decaying = step_index >= start
    horizon = jnp.maximum(total - start, 1.0)
    return jnp.where(decaying,
                     _cosine(config.learning_rate, config.final_learning_rate,
                             (step_index - start) / horizon),
                     config.learning_rate)

  def step(key: Array, state: TrainState) -> tuple[TrainState, CMTInfo]:
    ms: CMTState = state.method_state
    k_sample, k_fit = jax.random.split(key)
    is_annealing = annealing(state)
    if n_anneal == n:
      buf = draw_buffer(flow, target, state.params, k_sample, n)
    else:  # one branch runs: N_annealing samples while annealing, N afterwards
      buf = jax.lax.cond(
          is_annealing, lambda p, k: draw_buffer(flow, target, p, k, n_anneal, n_buf),
          lambda p, k: draw_buffer(flow, target, p, k, n, n_buf), state.params, k_sample)
    n_drawn = jnp.where(is_annealing, n_anneal, n).astype(jnp.int32)
    # The buffer is split over the devices along the sample axis (identity on one device).
    buf = jax.tree_util.tree_map(shard_batch, buf)

    at_target_fixed = ms.at_target if config.stop_adapting_at_target else jnp.array(False)
    eps_scale, last_call = budget_plan(ms, is_annealing)
    if plan:  # jump only where the target's weights on this buffer are usable
      jump_ess = dual_stats(buf, jnp.zeros(()), jnp.zeros(()), config.eps_tr, config.eps_ent).ess
      last_call = last_call & (jump_ess >= config.plan_jump_min_ess)
    masks = StepMasks(has_samples=buf.n_valid > 0,
                      imposed=at_target_fixed | imposed(state) | last_call)
    previous = Multipliers(lam=ms.lam, eta=ms.eta, iterations=jnp.zeros((), jnp.int32),
                           converged=jnp.array(True))
    def solved(*args):  # in the state's dtype (float64 under x64, whatever the solver used)
      m = choose_multipliers(*args)
      return m._replace(lam=m.lam.astype(ms.lam.dtype), eta=m.eta.astype(ms.lam.dtype))

    mult = jax.lax.cond(masks.solve, solved, lambda *_: target_multipliers(ms.lam.dtype), buf,
                        previous, state.step, eps_scale)
    # Without a valid sample (and nothing imposed) the previous multipliers stand.
    mult = jax.tree_util.tree_map(lambda a, b: jnp.where(masks.has_samples | masks.imposed, a, b),
                                  mult, previous)
    st = dual_stats(buf, mult.lam, mult.eta, config.eps_tr, config.eps_ent)
    reached = masks.has_samples & (mult.lam == 0) & (mult.eta == 0)
    at_target = ms.at_target | reached
    target_step = jnp.where(ms.at_target, ms.target_step,
                            jnp.where(reached, state.step, -1)).astype(jnp.int32)
    if config.refine_min_ess > 0:  # steps after the target's: temper weights below the floor
      lam = jax.lax.cond(  # the bisection runs on those steps only
          ms.at_target,
          lambda: lam_for_min_ess(buf, mult.lam, mult.eta,
                                  config.refine_min_ess).astype(mult.lam.dtype),
          lambda: mult.lam)
      mult = mult._replace(lam=lam)
      st = dual_stats(buf, mult.lam, mult.eta, config.eps_tr, config.eps_ent)

    n_annealing_steps = ms.n_annealing_steps + is_annealing.astype(jnp.int32)
    lr = learning_rate(state.step, at_target, target_step, n_annealing_steps, ms.budget)
    # A step at the target whose weights collapsed fits nothing (cmt.refine_skip_ess).
    fit_skipped = (ms.at_target & (st.ess < config.refine_skip_ess) if config.refine_skip_ess
                   else jnp.array(False))
    shift, rho = None, jnp.zeros(())
    if config.anchor > 0:
      on_path = is_annealing & (ms.path.alpha * ms.path.beta < _ANCHOR_PROGRESS_END)
      unit = anchor_shift(buf, ms.path, flow.initial_log_prob(buf.x), mult.lam, mult.eta, 1.0)
      rho = anchor_rho(normalised_log_weights(buf, mult.lam, mult.eta), unit, config.anchor,
                       config.anchor_min_ess_ratio * st.ess)
      rho = jnp.where(on_path, rho, 0.0)
      shift = rho * unit
    res = kernel(k_fit, state.params, with_learning_rate(state.opt_state, lr), buf, mult.lam,
                 mult.eta, None if n_anneal == n else n_drawn, ~fit_skipped, shift)

    # What the fit realised, on (a uniform subsample of) the same buffer: no new target
    # evaluations; always inside the drawn (valid) part of the buffer.
    fit_diag = fit_diagnostics(flow.log_prob, res.params, buf, res.log_wbar, n_diag)
    mode_diag = mode_diagnostics(target, buf, res.log_wbar)
    basin_diag = basin_diagnostics(target, buf, res.log_wbar)

    path = jax.tree_util.tree_map(lambda a, b: jnp.where(masks.has_samples, a, b),
                                  update_path(ms.path, mult.lam, mult.eta), ms.path)
    keep = masks.keep_warm_start
    gain = path.alpha * path.beta - ms.path.alpha * ms.path.beta
    new_ms = CMTState(lam=jnp.where(keep, ms.lam, mult.lam),
                      eta=jnp.where(keep, ms.eta, mult.eta), path=path, at_target=at_target,
                      target_step=target_step, n_annealing_steps=n_annealing_steps,
                      last_gain=jnp.where(is_annealing & masks.has_samples, gain, ms.last_gain),
                      eps_scale=eps_scale, budget=ms.budget)
    info = CMTInfo(
        lam=mult.lam, eta=mult.eta, alpha=path.alpha, beta=path.beta, kl=st.kl,
        entropy_drop=st.entropy_drop, step_ess=st.ess, entropy=st.entropy, step_log_z=st.log_z,
        dual_iterations=mult.iterations, dual_converged=mult.converged,
        n_invalid=buf.n_invalid - (n_buf - n_drawn), **fit_diag._asdict(),
        loss=res.fit.loss_last, n_skipped=res.fit.n_skipped, learning_rate=lr,
        at_target=at_target, **mode_diag._asdict(), **basin_diag._asdict(), n_evals=n_drawn,
        eps_scale=eps_scale, fit_skipped=fit_skipped,
        fit_ess=st.ess if shift is None else reverse_ess(res.log_wbar),
        anchor_rho=rho)
    return state.next(res.params, res.opt_state, new_ms), info

  return Method(name="cmt", init=init, step=step, evals_per_step=n,
                grad_steps_per_step=int(config.n_grad_steps), n_steps=int(n_steps),
                step_evals=None if n_anneal == n else step_evals,
                max_target_evals=budget, with_budget=with_budget)


def cmt_summary(records: list, config: CMTConfig, target: Target) -> dict:
  """CMT's figures for metrics.json: the path, the step at which it reached the target,
  the fraction of steps whose dual converged, and the non-finite samples of all buffers."""
  del target
  reached = [r["step"] for r in records if r.get("at_target")]
  return {
      "path": config.path,
      "target_reached_at_step": reached[0] if reached else None,
      "dual_converged_fraction": (float(np.mean([bool(r["dual_converged"]) for r in records]))
                                  if records else None),
      "n_invalid_samples": int(sum(r["n_invalid"] for r in records)),
  }


def cmt_plot(out_dir: str, records: list, config: CMTConfig, title: str) -> None:
  """``schedule.png``: the learned schedule (λ, η, α, β, ESS, KL, entropy drop per step)."""
  from cmtjax.io import plots
  plots.plot_schedule(os.path.join(out_dir, "schedule.png"), records, eps_tr=config.eps_tr,
                      eps_ent=config.eps_ent, title=f"CMT ({config.path}), {title}: learned schedule")


SPEC = MethodSpec(name="cmt", config=CMTConfig, make=make_cmt, summary=cmt_summary,
                  plot=cmt_plot)
