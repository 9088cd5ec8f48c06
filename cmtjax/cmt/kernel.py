"""One CMT step, split into a kernel for given multipliers and the rules that choose them.

A CMT step (Algorithm 1) has the shape of an adaptive MCMC step: a kernel that moves the
state for given parameters, and a rule around it that picks those parameters. Here:

  buffer  = draw_buffer(...)                      N samples of q̂_i, their log q̂_i and log p̃:
                                                  the step's only target evaluations
  masks   = StepMasks(...)                        what this buffer allows (named, no NaN tricks)
  mult    = adaptive_multipliers(...)             (λ, η) from the dual (CMT),
          | scheduled_multipliers(...)            from a fixed table (the fixed baselines),
          | target_multipliers()                  λ = η = 0 (refinement at the target)
  result  = kernel(key, params, opt_state,        fit q̂_{i+1} to q_{i+1} ∝ q̂_i^{λ/s} p̃^{1/s}
                   buffer, λ, η)                  (s = 1 + λ + η) by weighted forward KL

The diagnostics of a step (what the fit realised, mode counts) are in
:mod:`cmtjax.cmt.diagnostics`; the method that strings these together, with its state and
learning-rate schedule, is :mod:`cmtjax.methods.cmt`. Everything here is pure and jittable.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from cmtjax.cmt.dual import Buffer, capped_log_weights, make_buffer, normalised_log_weights
from cmtjax.cmt.solver import SolverConfig, solve_dual
from cmtjax.train.fit import FitInfo, fit_weighted

Array = jax.Array
Params = Any


def draw_buffer(flow, target, params: Params, key: Array, n_draw: int,
                n_rows: Optional[int] = None) -> Buffer:
  """Draws ``n_draw`` samples of the flow and evaluates the target on them.

  Args:
    flow: the flow (``sample_and_log_prob``).
    target: the target (``log_prob``; ``n_draw`` evaluations).
    params: flow parameters.
    key: PRNG key.
    n_draw: samples to draw (static).
    n_rows: length of the buffer (static, ≥ ``n_draw``; None: ``n_draw``). Rows past
      ``n_draw`` are padding, flagged invalid, so that steps with different draw sizes share
      one buffer shape.

  Returns:
    The :class:`Buffer` (non-finite samples and padding flagged invalid).
  """
  n_rows = n_draw if n_rows is None else int(n_rows)
  if n_rows < n_draw:
    raise ValueError(f"n_rows={n_rows} < n_draw={n_draw}")
  x, log_q = flow.sample_and_log_prob(params, key, n_draw)
  buf = make_buffer(x, log_q, target.log_prob(x))
  if n_rows == n_draw:
    return buf
  pad = n_rows - n_draw
  return Buffer(x=jnp.concatenate([buf.x, jnp.zeros((pad, buf.x.shape[1]), buf.x.dtype)]),
                log_q=jnp.concatenate([buf.log_q, jnp.zeros((pad,), buf.log_q.dtype)]),
                log_p=jnp.concatenate([buf.log_p, jnp.zeros((pad,), buf.log_p.dtype)]),
                valid=jnp.concatenate([buf.valid, jnp.zeros((pad,), bool)]))


class StepMasks(NamedTuple):
  """What a step may do with its buffer (boolean scalars).

  Attributes:
    has_samples: the buffer holds at least one valid entry. Without one the dual and the
      weights are undefined: the step keeps the multipliers and the path, and skips its fit.
    imposed: λ = η = 0 is imposed rather than solved for (a fixed I or the end of a fixed
      schedule, or the target reached with ``stop_adapting_at_target``).
  """

  has_samples: Array
  imposed: Array

  @property
  def solve(self) -> Array:
    """The multiplier rule runs (the dual or the schedule)."""
    return self.has_samples & ~self.imposed

  @property
  def keep_warm_start(self) -> Array:
    """The warm start (λ, η) of the next step stays that of this step's start."""
    return self.imposed | ~self.has_samples


class Multipliers(NamedTuple):
  """(λ, η) of a step and how they were found.

  Attributes:
    lam: trust-region multiplier λ ≥ 0.
    eta: entropy multiplier η ≥ 0.
    iterations: root-finder iterations (0 unless the dual was solved).
    converged: the dual's KKT conditions hold (True for a table or the target).
  """

  lam: Array
  eta: Array
  iterations: Array
  converged: Array


def target_multipliers(dtype=jnp.float32) -> Multipliers:
  """λ = η = 0: the next distribution is the target itself."""
  return Multipliers(lam=jnp.zeros((), dtype), eta=jnp.zeros((), dtype),
                     iterations=jnp.zeros((), jnp.int32), converged=jnp.array(True))


def scheduled_multipliers(table: Array, step: Array) -> Multipliers:
  """Row ``step`` of a fixed schedule's ``[I, 2]`` table of (λ, η) (its last row after I)."""
  row = table[jnp.minimum(step, table.shape[0] - 1)]
  return Multipliers(lam=row[0], eta=row[1], iterations=jnp.zeros((), jnp.int32),
                     converged=jnp.array(True))


def adaptive_multipliers(buffer: Buffer, eps_tr: float, eps_ent: float, warm: Multipliers, *,
                         use_trust_region: bool, use_entropy: bool,
                         solver: SolverConfig) -> Multipliers:
  """(λ, η) that solve the CMT dual on the buffer, warm-started from ``warm``."""
  sol = solve_dual(buffer, eps_tr, eps_ent, warm.lam, warm.eta,
                   use_trust_region=use_trust_region, use_entropy=use_entropy, config=solver)
  return Multipliers(lam=sol.lam, eta=sol.eta, iterations=sol.iterations,
                     converged=sol.converged)


class KernelResult(NamedTuple):
  """What the kernel returns.

  Attributes:
    params, opt_state: the fitted flow q̂_{i+1} and its optimiser state.
    log_wbar: ``[N]`` normalised log weights of q_{i+1} on the buffer (−inf where invalid).
    fit: the fit's :class:`~cmtjax.train.fit.FitInfo` (all K steps counted as skipped when
      the buffer holds no valid entry).
  """

  params: Params
  opt_state: Any
  log_wbar: Array
  fit: FitInfo


def make_kernel(log_prob: Callable[[Params, Array], Array], optimizer, *, n_grad_steps: int,
                batch_size: int, fit_mode: str = "resample", weight_cap: float = 0.0,
                average_tail: int = 0,
                shard: Callable[[Array], Array] = lambda a: a) -> Callable[..., KernelResult]:
  """The CMT kernel: one annealing step for given (λ, η).

  Args:
    log_prob: ``(params, x: [B, dim]) -> [B]`` the flow's log density.
    optimizer: optax transformation of the fit.
    n_grad_steps: K, optimiser steps of the fit.
    batch_size: minibatch size.
    fit_mode: ``"resample"`` or ``"weighted"`` (:func:`cmtjax.train.fit.fit_weighted`).
    weight_cap: the fit's weights are capped at this multiple of the uniform share
      (:func:`cmtjax.cmt.dual.capped_log_weights`); 0: as they are. The returned
      ``log_wbar`` (the step's distribution, for the diagnostics) is never capped.
    average_tail: the fit returns the mean of its last this many iterates
      (:func:`cmtjax.train.fit.fit_weighted`; 0: the last iterate).
    shard: places a batch on the devices (identity on one device).

  Returns:
    ``kernel(key, params, opt_state, buffer, lam, eta, n_active=None, fit_ok=True,
    log_shift=None) -> KernelResult``; ``n_active`` (None: every row) is the number of leading
    rows that were drawn; ``fit_ok`` False leaves the flow as it is (no fit; its steps are not
    counted as skipped, and the losses are NaN); ``log_shift`` (``[N]``, finite on the valid
    rows; None: zeros) is added to the log weights of (λ, η) before they are normalised: the
    step's distribution becomes q_{i+1} · e^shift (an anchored step, see
    :attr:`cmtjax.methods.cmt.CMTConfig.anchor`).
  """

  def fit_log_prob(p, xb):
    return log_prob(p, shard(xb))

  def kernel(key: Array, params: Params, opt_state: Any, buffer: Buffer, lam: Array,
             eta: Array, n_active: Optional[Array] = None,
             fit_ok: Array | bool = True, log_shift: Optional[Array] = None) -> KernelResult:
    log_wbar = normalised_log_weights(buffer, lam, eta)
    if log_shift is not None:
      log_wbar = log_wbar + jnp.where(buffer.valid, log_shift, 0.0)
      log_wbar = log_wbar - jax.scipy.special.logsumexp(log_wbar)
    log_wbar = shard(log_wbar)
    log_wfit = log_wbar if weight_cap <= 0 else shard(capped_log_weights(log_wbar, weight_cap))

    def fit(_):
      return fit_weighted(fit_log_prob, optimizer, params, opt_state, key, buffer.x, log_wfit,
                          n_steps=n_grad_steps, batch_size=batch_size, mode=fit_mode,
                          n_active=n_active, average_tail=average_tail)

    def no_fit(_):
      like = jax.eval_shape(fit, None)[2]  # the fit's own dtypes (the flow's, not the buffer's)
      nan = lambda s: jnp.full(s.shape, jnp.nan, s.dtype)  # noqa: E731
      # Without a valid sample every step counts as skipped (no progress); a fit left out
      # on purpose (fit_ok False) counts none.
      skipped = jnp.where(buffer.n_valid > 0, 0, n_grad_steps).astype(jnp.int32)
      return params, opt_state, FitInfo(loss_first=nan(like.loss_first),
                                        loss_last=nan(like.loss_last), n_skipped=skipped)

    new_params, new_opt_state, info = jax.lax.cond((buffer.n_valid > 0) & fit_ok, fit, no_fit,
                                                   None)
    return KernelResult(params=new_params, opt_state=new_opt_state, log_wbar=log_wbar,
                        fit=info)

  return kernel
