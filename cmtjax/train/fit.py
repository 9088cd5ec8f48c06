"""Importance-weighted forward-KL fitting of a flow to a weighted buffer.

Minimises −Σ_n w̄_n log q_θ(x_n) over minibatches with K optax steps inside one
``lax.scan`` (one jitted call per annealing step), warm-started from the current parameters.

Two minibatch estimators of the same loss:
  * ``"resample"`` (default): draw minibatch indices with probability w̄ (inverse-CDF on the
    cumulative weights: O(N + B log N) per step), loss −mean log q_θ(x_idx). Its variance does
    not blow up when a few weights dominate.
  * ``"weighted"``: draw indices uniformly, loss −mean N w̄_idx log q_θ(x_idx).

A step whose gradient is not finite is skipped (parameters and optimiser state unchanged)
and counted.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from cmtjax.sampling.resampling import resample_indices

Array = jax.Array
Params = Any

FIT_MODES = ("resample", "weighted")


class FitInfo(NamedTuple):
  """Diagnostics of one fit.

  Attributes:
    loss_first: minibatch loss of the first step.
    loss_last: mean minibatch loss over the last tenth of the steps.
    n_skipped: steps skipped because the loss or gradient was not finite.
  """

  loss_first: Array
  loss_last: Array
  n_skipped: Array


def _tree_all_finite(tree) -> Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def clipped_adam(learning_rate, grad_clip: float) -> optax.GradientTransformation:
  """Adam after global-norm gradient clipping (``grad_clip = 0`` disables the clipping)."""
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  return optax.chain(*parts, optax.adam(learning_rate))


def make_optimizer(learning_rate: float, grad_clip: float) -> optax.GradientTransformation:
  """:func:`clipped_adam` with a learning rate that a step can change (see
  :func:`with_learning_rate`)."""
  return optax.inject_hyperparams(lambda learning_rate: clipped_adam(learning_rate, grad_clip))(
      learning_rate=learning_rate)


def with_learning_rate(opt_state: Any, learning_rate) -> Any:
  """The state of a :func:`make_optimizer` optimiser with its learning rate replaced."""
  hyper = dict(opt_state.hyperparams)
  hyper["learning_rate"] = jnp.asarray(learning_rate, jnp.asarray(hyper["learning_rate"]).dtype)
  return opt_state._replace(hyperparams=hyper)


def guarded_update(optimizer: optax.GradientTransformation, grads, loss: Array, opt_state: Any,
                   params: Params) -> tuple[Params, Any, Array]:
  """One optimiser step that is skipped when the loss or any gradient is not finite.

  Every method's inner loop uses it, so that one NaN cannot poison the parameters or the
  optimiser's moments.

  Returns:
    ``(params, opt_state, ok)``: the updated pair, or the unchanged pair when ``ok`` is False.
  """
  ok = jnp.isfinite(loss) & _tree_all_finite(grads)
  updates, new_state = optimizer.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  keep = lambda a, b: jnp.where(ok, a, b)  # noqa: E731
  return (jax.tree_util.tree_map(keep, new_params, params),
          jax.tree_util.tree_map(keep, new_state, opt_state), ok)


class OptimizerSteps(NamedTuple):
  """What :func:`optimizer_steps` returns.

  Attributes:
    params, opt_state: after the last step.
    n_skipped: steps skipped for a non-finite loss or gradient (int32 scalar).
    losses: ``[K]`` loss of every step.
    aux: the loss function's auxiliary output of every step (stacked along a leading K axis).
    extra: the carried ``extra`` after the last step (None if none was given).
  """

  params: Params
  opt_state: Any
  n_skipped: Array
  losses: Array
  aux: Any
  extra: Any


def optimizer_steps(optimizer: optax.GradientTransformation, loss_fn: Callable,
                    params: Params, opt_state: Any, key: Array, n_steps: int, *,
                    extra: Any = None,
                    update_extra: Optional[Callable[[Any, Params, Any], Any]] = None
                    ) -> OptimizerSteps:
  """K guarded optimiser steps (:func:`guarded_update`) in one ``lax.scan``.

  Every method's inner loop is this: step k differentiates ``loss_fn`` at the current
  parameters with key ``split(key, K)[k]``, and a non-finite loss or gradient skips the step.

  Args:
    optimizer: the optax transformation.
    loss_fn: ``(params, key) -> (loss, aux)``, or ``(params, key, extra) -> (loss, aux)``
      when ``extra`` is given; ``aux`` may be ``()``.
    params, opt_state: the starting point.
    key: PRNG key of the K steps.
    n_steps: K.
    extra: state carried through the steps beside the parameters (e.g. FAB's replay
      buffer); None: none.
    update_extra: ``(extra, new_params, aux) -> extra`` after each step.

  Returns:
    An :class:`OptimizerSteps`.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def body(carry, k):
    p, s, ex, skipped = carry
    (loss, aux), grads = grad_fn(p, k) if extra is None else grad_fn(p, k, ex)
    p, s, ok = guarded_update(optimizer, grads, loss, s, p)
    if update_extra is not None:
      ex = update_extra(ex, p, aux)
    return (p, s, ex, skipped + (~ok).astype(jnp.int32)), (loss, aux)

  (params, opt_state, extra, skipped), (losses, aux) = jax.lax.scan(
      body, (params, opt_state, extra, jnp.zeros((), jnp.int32)),
      jax.random.split(key, n_steps))
  return OptimizerSteps(params=params, opt_state=opt_state, n_skipped=skipped, losses=losses,
                        aux=aux, extra=extra)


def fit_weighted(log_prob_fn: Callable[[Params, Array], Array],
                 optimizer: optax.GradientTransformation, params: Params, opt_state: Any,
                 key: Array, x: Array, log_wbar: Array, *, n_steps: int, batch_size: int,
                 mode: str = "resample",
                 n_active: Optional[Array] = None,
                 average_tail: int = 0) -> tuple[Params, Any, FitInfo]:
  """Fits q_θ to the distribution represented by a weighted buffer.

  Args:
    log_prob_fn: ``(params, x: [B, dim]) -> [B]`` model log density.
    optimizer: an optax transformation.
    params: starting parameters (the previous step's).
    opt_state: optimiser state.
    key: PRNG key.
    x: ``[N, dim]`` buffer samples.
    log_wbar: ``[N]`` normalised log weights (log-softmax; −inf drops an entry).
    n_steps: K, the number of optimiser steps (static).
    batch_size: minibatch size B (static).
    mode: ``"resample"`` or ``"weighted"`` (static).
    n_active: only the first ``n_active`` rows hold samples (the rest is padding with
      weight 0); ``"weighted"`` draws among them and scales by ``n_active``. None: all N.
    average_tail: return the mean of the last this many iterates instead of the last one
      (iterate averaging, static; 0 or 1: the last). Adam moves every parameter by about its
      learning rate whatever the size of the move the buffer asks for, so a fit asked for a
      small step ends displaced by its minibatch noise; the mean of the tail iterates keeps
      the drift and averages much of that noise out. The optimiser state is the last
      iterate's; the next fit starts from the returned mean.

  Returns:
    ``(params, opt_state, FitInfo)``.
  """
  if not 0 <= average_tail <= n_steps:
    raise ValueError(f"average_tail must be in [0, n_steps={n_steps}], got {average_tail}")
  if mode not in FIT_MODES:
    raise ValueError(f"unknown fit mode {mode!r}; known: {', '.join(FIT_MODES)}")
  n = x.shape[0]
  wbar = jnp.exp(log_wbar)
  cdf = jnp.cumsum(wbar)  # w̄ is normalised: the CDF of the weights as they are

  def batch_loss(p, k):
    if mode == "resample":
      return -jnp.mean(log_prob_fn(p, x[resample_indices(k, cdf, batch_size)]))
    m = n if n_active is None else n_active
    idx = jax.random.randint(k, (batch_size,), 0, m)
    w = m * wbar[idx]
    lq = log_prob_fn(p, x[idx])
    return -jnp.mean(jnp.where(w > 0, w * lq, 0.0))

  if average_tail > 1:
    start = n_steps - average_tail

    def add_tail(ex, p, _):  # (running sum of the tail iterates, steps taken)
      total, i = ex
      take = i >= start
      total = jax.tree_util.tree_map(lambda a, b: a + jnp.where(take, b, jnp.zeros_like(b)),
                                     total, p)
      return total, i + 1

    res = optimizer_steps(optimizer, lambda p, k, ex: (batch_loss(p, k), ()), params,
                          opt_state, key, n_steps,
                          extra=(jax.tree_util.tree_map(jnp.zeros_like, params),
                                 jnp.zeros((), jnp.int32)),
                          update_extra=add_tail)
    out = jax.tree_util.tree_map(lambda a: (a / average_tail).astype(a.dtype), res.extra[0])
  else:
    res = optimizer_steps(optimizer, lambda p, k: (batch_loss(p, k), ()), params, opt_state,
                          key, n_steps)
    out = res.params
  tail = max(1, n_steps // 10)
  info = FitInfo(loss_first=res.losses[0], loss_last=jnp.mean(res.losses[-tail:]),
                 n_skipped=res.n_skipped)
  return out, res.opt_state, info
