"""The one training loop every method plugs into.

The loop owns what is common to all methods: PRNG handling, the jitted step, the budget
(target evaluations and gradient steps, counted on the host from each method's static
per-step costs), periodic evaluation, the progress bar and the per-step records. Everything
method-specific happens inside ``method.step``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from cmtjax.train.state import Method, TrainState

# Keys of a step record shown in the progress bar when the method reports them.
_BAR_KEYS = (("lam", "λ"), ("eta", "η"), ("step_ess", "ess"), ("batch_ess", "ess"),
             ("loss", "loss"))


class TrainResult(NamedTuple):
  """What :func:`train` returns.

  Attributes:
    state: the final :class:`TrainState`.
    records: one dict per step: ``step``, ``target_evals``, ``grad_steps``, ``wall_seconds``,
      ``step_seconds`` and the method's info fields (Python scalars).
    evals: one dict per evaluation: ``step``, ``target_evals`` and the evaluation's figures.
    target_evals: target evaluations used by training (evaluations for metrics excluded).
    grad_steps: optimiser steps taken.
    wall_seconds: training wall time (evaluations excluded).
    compile_seconds: time of the first step beyond a typical step (mostly compilation).
  """

  state: TrainState
  records: list
  evals: list
  target_evals: int
  grad_steps: int
  wall_seconds: float
  compile_seconds: float


def plan_steps(method_evals_per_step: int, max_target_evals: Optional[int],
               max_steps: Optional[int]) -> int:
  """Number of outer steps a budget allows (the smaller of the two limits)."""
  limits = []
  if max_target_evals is not None:
    limits.append(int(max_target_evals) // max(int(method_evals_per_step), 1))
  if max_steps is not None:
    limits.append(int(max_steps))
  if not limits:
    raise ValueError("set a budget: max_target_evals and/or max_steps")
  n = min(limits)
  if n < 1:
    raise ValueError(
        f"budget too small: max_target_evals={max_target_evals} allows no step of "
        f"{method_evals_per_step} target evaluations")
  return n


def _scalar(v):
  v = np.asarray(v)
  if v.dtype == bool:
    return bool(v)
  if np.issubdtype(v.dtype, np.integer):
    return int(v)
  f = float(v)
  return f if math.isfinite(f) else None


def train(method: Method, key: jax.Array, params: Any, *,
          eval_fn: Optional[Callable[[jax.Array, Any], dict]] = None, eval_every: int = 0,
          on_record: Optional[Callable[[dict], None]] = None,
          on_eval: Optional[Callable[[dict], None]] = None, progress: bool = True,
          desc: str = "") -> TrainResult:
  """Runs ``method`` for ``method.n_steps`` outer steps.

  Args:
    method: the method (its ``n_steps`` is the budget in steps).
    key: PRNG key of the run.
    params: initial flow parameters.
    eval_fn: ``(key, params) -> dict`` of figures, called every ``eval_every`` steps and after
      the last step (not counted in the training budget or wall time).
    eval_every: evaluation period in steps (0: only at the end, if ``eval_fn`` is given).
    on_record: called with each step record as soon as it exists (e.g. to append to JSONL).
    on_eval: called with each evaluation's dict as soon as it exists.
    progress: show a progress bar with the key figures.
    desc: progress-bar label.

  Returns:
    A :class:`TrainResult`.
  """
  key, k_init = jax.random.split(key)
  state = method.init(k_init, params)
  step_fn = jax.jit(method.step, donate_argnums=(1,))
  records, evals = [], []
  target_evals = grad_steps = 0
  wall = 0.0
  step_times = []
  bar = tqdm(total=method.n_steps, desc=desc or method.name, disable=not progress,
             dynamic_ncols=True, leave=True)

  def evaluate(step_idx):
    k = jax.random.fold_in(key, 10_000_019 + step_idx)
    figures = eval_fn(k, state.params)
    evals.append({"step": step_idx, "target_evals": target_evals, **figures})
    if on_eval is not None:
      on_eval(evals[-1])

  for i in range(method.n_steps):
    k = jax.random.fold_in(key, i)
    t0 = time.perf_counter()
    state, info = step_fn(k, state)
    info = jax.device_get(info)
    dt = time.perf_counter() - t0
    step_times.append(dt)
    wall += dt
    target_evals += method.evals_per_step
    grad_steps += method.grad_steps_per_step
    record = {"step": i, "target_evals": target_evals, "grad_steps": grad_steps,
              "wall_seconds": wall, "step_seconds": dt}
    record.update({k_: _scalar(v) for k_, v in info._asdict().items()})
    records.append(record)
    if on_record is not None:
      on_record(record)
    bar.set_postfix_str(_bar_text(record, target_evals), refresh=False)
    bar.update(1)
    last = i == method.n_steps - 1
    if eval_fn is not None and (last or (eval_every and (i + 1) % eval_every == 0)):
      evaluate(i)
  bar.close()
  typical = float(np.median(step_times[1:])) if len(step_times) > 1 else 0.0
  compile_s = max(step_times[0] - typical, 0.0) if step_times else 0.0
  return TrainResult(state=state, records=records, evals=evals, target_evals=target_evals,
                     grad_steps=grad_steps, wall_seconds=wall, compile_seconds=compile_s)


def _bar_text(record: dict, target_evals: int) -> str:
  parts, seen = [], set()
  for key, label in _BAR_KEYS:
    v = record.get(key)
    if v is None or label in seen:
      continue
    seen.add(label)
    parts.append(f"{label}={v:.3g}")
  parts.append(f"evals={target_evals:.3g}")
  return " ".join(parts)
