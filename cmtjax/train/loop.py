"""The one training loop every method plugs into.

The loop owns what is common to all methods: PRNG handling, the jitted step, the budget
(target evaluations and gradient steps, counted on the host from each method's static
per-step costs), periodic evaluation, the progress bar, the per-step records, checkpoints and resume
(:mod:`cmtjax.train.checkpoint`), placement on a device mesh (:mod:`cmtjax.train.sharding`)
and the stopping rule for a run that can no longer make progress. Everything method-specific
happens inside ``method.step``.

Stopping rule (generic over methods, read from the step's info fields): a step is *stalled*
when all its target evaluations were non-finite (``n_invalid == method.evals_per_step``) or
all its gradient steps were skipped (``n_skipped == method.grad_steps_per_step``). After
``max_stalled_steps`` consecutive stalled steps the loop saves a checkpoint and raises
:class:`TrainingStalled`, whose message names the step, the reason and the checkpoint.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from cmtjax.train.checkpoint import Checkpointer, CheckpointOptions
from cmtjax.train.sharding import replicate, replicated
from cmtjax.train.state import Method, TrainState

# Keys of a step record shown in the progress bar when the method reports them (of a
# per-component figure, the smallest component).
# The key figures a progress bar shows, from a step's record (the first key of each label
# that the method records): CMT's multipliers and path position, the ESS (SMC: its
# particles'), φ > 0 on molecules, the loss, and SMC's and FAB's log Z and HMC acceptance.
_BAR_KEYS = (("lam", "λ"), ("eta", "η"), ("beta", "β"), ("step_ess", "ess"),
             ("batch_ess", "ess"), ("ess", "ess"), ("phi_pos_weighted", "φ>0"),
             ("loss", "loss"), ("log_z", "log Z"), ("acceptance", "acc"))
_BAR_FORMAT = {"log_z": ".5g"}  # the rest: 3 significant digits


class TrainResult(NamedTuple):
  """What :func:`train` returns.

  Attributes:
    state: the final :class:`TrainState`.
    records: one dict per step: ``step``, ``target_evals``, ``grad_steps``, the method's
      info fields (Python scalars), and ``timing`` (``wall_seconds`` of training so far,
      ``step_seconds``): everything outside ``timing`` is a function of the configuration
      and seed, everything inside it is wall-clock time.
    evals: one dict per evaluation: ``step``, ``target_evals`` and the evaluation's figures.
    target_evals: target evaluations used by training (evaluations for metrics excluded).
    grad_steps: optimiser steps taken.
    wall_seconds: training wall time (evaluations excluded).
    compile_seconds: time of the first step beyond a typical step (mostly compilation).
    resumed_from: folder of the checkpoint the run resumed from (None: a fresh start).
    checkpoint: folder of the last checkpoint written or restored (None: none).
    stopped_at_time_limit: the run ended at ``max_training_seconds`` with steps of its budget
      left.
    planned_target_evals: with ``plan_to_time_limit``, the budget the run last planned for
      (None: not planned to a time limit).
  """

  state: TrainState
  records: list
  evals: list
  target_evals: int
  grad_steps: int
  wall_seconds: float
  compile_seconds: float
  resumed_from: Optional[str] = None
  checkpoint: Optional[str] = None
  stopped_at_time_limit: bool = False
  planned_target_evals: Optional[int] = None


# Planning to a time limit: the share of the time left that a budget is planned to use (the
# rest absorbs the noise of step times), and the latest steps whose time per evaluation
# predicts the next ones.
_PLAN_MARGIN = 0.98
_PLAN_WINDOW = 8
# A planned budget is raised later in a sitting only while at most this share of it has been
# spent (for CMT: while annealing or early in the learning rate's decay, which a larger
# budget stretches a little) and only by at least this factor (not on every step's noise).
_RAISE_WITHIN = 0.5
_RAISE_FACTOR = 1.1


class TrainingStalled(RuntimeError):
  """The run stopped because it can no longer make progress.

  Attributes:
    step: index of the last step run.
    reason: why the steps were stalled.
    checkpoint: folder of the last checkpoint (None if checkpointing was off).
  """

  def __init__(self, step: int, reason: str, n_stalled: int, checkpoint: Optional[str]):
    self.step, self.reason, self.checkpoint = step, reason, checkpoint
    where = (f"last checkpoint: {checkpoint}" if checkpoint else
             "no checkpoint (checkpointing is off)")
    super().__init__(f"training stopped at step {step}: {reason} in {n_stalled} consecutive "
                     f"steps; {where}")


class TargetNotFinite(ValueError):
  """The target's log density was non-finite for every sample of the run's first step: a
  problem of the target (or of where the initial flow puts its samples), not of training."""


def stall_reason(method: Method, info: dict) -> Optional[str]:
  """Why a step made no progress, or None (read from its info's ``n_invalid``/``n_skipped``)."""
  reasons = []
  n_invalid = info.get("n_invalid")
  n_evals = info.get("n_evals") or method.evals_per_step
  if n_invalid is not None and n_invalid >= n_evals:
    reasons.append(f"all {n_evals} target evaluations were non-finite")
  n_skipped = info.get("n_skipped")
  if n_skipped is not None and n_skipped >= method.grad_steps_per_step > 0:
    reasons.append(f"all {method.grad_steps_per_step} gradient steps were skipped "
                   f"(non-finite loss or gradient)")
  return " and ".join(reasons) or None


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


def check_time_plan(method: Method, max_training_seconds: Optional[float]) -> None:
  """Raises ValueError unless ``method`` can be planned to the time limit (see
  :func:`train`'s ``plan_to_time_limit``): the limit, a method that can change its budget,
  and a budget of target evaluations to plan within."""
  if max_training_seconds is None:
    raise ValueError("planning to a time limit needs the limit (max_training_seconds)")
  if method.with_budget is None:
    raise ValueError(f"method {method.name!r} cannot plan its budget to a time limit; only a "
                     f"method with a budget plan can (cmt); a time limit without a plan "
                     f"(--minutes) cuts the run at the limit")
  if method.max_target_evals is None:
    raise ValueError("planning to a time limit needs a budget of target evaluations to plan "
                     "within (the method's max_target_evals)")


def _scalar(v):
  """A record value: a Python scalar (None for a non-finite float), or a list of them for a
  per-component array (e.g. one figure per residue)."""
  v = np.asarray(v)
  if v.ndim:
    return [_scalar(u) for u in v.reshape(-1)]
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
          desc: str = "", checkpoint: Optional[CheckpointOptions] = None,
          resume: bool = False, mesh: Optional[Mesh] = None,
          max_stalled_steps: int = 0,
          max_training_seconds: Optional[float] = None,
          plan_to_time_limit: bool = False) -> TrainResult:
  """Runs ``method`` for ``method.n_steps`` outer steps.

  Args:
    method: the method (its ``n_steps`` is the budget in steps).
    key: PRNG key of the run.
    params: initial flow parameters.
    eval_fn: ``(key, params) -> dict`` of figures, called every ``eval_every`` steps and after
      the last step (not counted in the training budget or wall time).
    eval_every: evaluation period in steps (0: only at the end, if ``eval_fn`` is given).
    on_record: called with each step record as soon as it exists (e.g. to append to JSONL).
      On resume it is first called with every record restored from the checkpoint, in order.
    on_eval: called with each evaluation's dict as soon as it exists (restored ones first).
    progress: show a progress bar with the key figures.
    desc: progress-bar label.
    checkpoint: where and how often to checkpoint (None: no checkpoints).
    resume: continue from the newest readable checkpoint in ``checkpoint.directory``
      (its key, state, counters and records replace ``key``/``params``).
    mesh: a 1-D ``"batch"`` mesh (:func:`cmtjax.train.sharding.make_mesh`): the state is
      replicated over it and the step runs under it (None: default device, no sharding).
    max_stalled_steps: stop with :class:`TrainingStalled` after this many consecutive steps
      without progress (0: never).
    max_training_seconds: a limit on the training wall time (``wall_seconds``, carried over a
      resume; None: none). A step is the last when the next one, at the median time per
      target evaluation of the steps so far (restored ones included; a sitting's first step,
      which compiles, only while there is no other) times its cost, would end past the
      limit; it is then evaluated and checkpointed like the budget's last step. A resumed run
      already past the limit takes no step. In a multi-process run process 0 decides.
    plan_to_time_limit: plan the run to end within ``max_training_seconds`` instead of being
      cut there: as soon as a step's time is known without compilation (after the second
      step of a fresh run, before the first step of a resumed one) the budget becomes the
      target evaluations that fit in 98 % of the time left at the median time per evaluation
      of the latest 8 steps (at most ``method.max_target_evals``, which must be set), and
      the method plans for it (``method.with_budget``: CMT's annealing share and
      learning-rate decay). Later in the sitting the budget is lowered when the latest steps
      say it would end past the limit (a machine that got slower), and raised when they say
      a tenth more evaluations or over would fit (a machine that got faster: early steps
      slowed by other work), the latter only while at most half of the planned budget is
      spent; each change moves the plan (the decay's horizon, the annealing share). A resumed
      sitting plans afresh (up to ``method.max_target_evals``). A fresh run whose budget was
      set once is usually the run of that budget (``--budget planned_target_evals`` repeats
      it): CMT's steps 0 and 1 do not depend on the budget unless it allows fewer than
      three annealing steps or the target is reached within them. A step-time estimate from
      steps of another cost (CMT's larger annealing buffer) can leave time unused; the limit
      still ends the run if the estimate was short (the same latest-8 estimate decides it).

  Returns:
    A :class:`TrainResult`.

  Raises:
    TrainingStalled: see ``max_stalled_steps``.
    ValueError: ``plan_to_time_limit`` without ``max_training_seconds``, or for a method that
      cannot change its budget (``method.with_budget`` None).
    cmtjax.train.checkpoint.CheckpointError: ``resume`` without a usable checkpoint, or a
      checkpoint of another configuration.
  """
  if resume and checkpoint is None:
    raise ValueError("resume=True needs checkpoint options (the checkpoint folder)")
  if plan_to_time_limit:
    check_time_plan(method, max_training_seconds)
  run_key = key
  key, k_init = jax.random.split(run_key)
  # The step donates its state: work on a copy so the caller's ``params`` stay usable.
  params = jax.tree_util.tree_map(lambda a: jax.numpy.array(a, copy=True), params)
  state = replicate(method.init(k_init, params), mesh)
  records, evals = [], []
  cap = (method.max_target_evals if method.max_target_evals is not None
         else method.n_steps * method.evals_per_step)
  host = {"target_evals": 0, "grad_steps": 0, "wall_seconds": 0.0, "compile_seconds": 0.0,
          "stalled": 0, "planned_evals": cap}
  start = 0
  ckpt = Checkpointer(checkpoint) if checkpoint is not None else None
  resumed_from = None
  if ckpt is not None and not resume:
    ckpt.clear_history()
  if resume:
    restored = ckpt.restore(state, run_key)
    run_key, state, records, evals = (restored.key, replicate(restored.state, mesh),
                                      restored.records, restored.evals)
    key, _ = jax.random.split(run_key)
    host.update(restored.host)
    start, resumed_from = restored.n_done, restored.path
    for r in records:
      if on_record is not None:
        on_record(r)
    for e in evals:
      if on_eval is not None:
        on_eval(e)

  if mesh is not None:
    rep = replicated(mesh)
    step_fn = jax.jit(method.step, donate_argnums=(1,), out_shardings=(rep, rep))
  else:
    step_fn = jax.jit(method.step, donate_argnums=(1,))
  step_times = []
  compile_base = host["compile_seconds"]
  def next_cost(st) -> int:
    return int(method.step_evals(st)) if method.step_evals is not None else method.evals_per_step

  def fits(used: int, cost: int) -> bool:
    if plan_to_time_limit:
      return used + cost <= host["planned_evals"]
    return method.max_target_evals is None or used + cost <= method.max_target_evals

  # A method whose steps differ in cost shows its progress in target evaluations.
  by_evals = method.step_evals is not None and method.max_target_evals is not None
  if by_evals:
    bar = tqdm(total=host["planned_evals"] if plan_to_time_limit else method.max_target_evals,
               initial=host["target_evals"],
               desc=desc or method.name, disable=not progress, dynamic_ncols=True, leave=True,
               unit="evals", unit_scale=True)
  else:
    bar = tqdm(total=method.n_steps, initial=start, desc=desc or method.name,
               disable=not progress, dynamic_ncols=True, leave=True)
  stall_reason_first = None

  def evaluate(step_idx):
    k = jax.random.fold_in(key, 10_000_019 + step_idx)
    figures = eval_fn(k, state.params)
    evals.append({"step": step_idx, "target_evals": host["target_evals"], **figures})
    if on_eval is not None:
      on_eval(evals[-1])

  def save(n_done):
    return ckpt.save(n_done, state, run_key, dict(host), records, evals)

  # Seconds per target evaluation of earlier steps, for the time limit (steps of different
  # cost, e.g. CMT's annealing and refinement, are predicted by their cost): a resumed run
  # starts from its restored steps, the first of the run (which compiled) left out; a
  # sitting's own first step compiles too, so it counts only while there is no other.
  restored_per_eval = [
      r["timing"]["step_seconds"] / max(r["target_evals"] - prev["target_evals"], 1)
      for prev, r in zip(records, records[1:]) if "step_seconds" in r.get("timing", {})]
  sitting_per_eval = []

  def per_eval_seconds(compiled_too: bool) -> Optional[float]:
    """Typical (median) seconds per target evaluation of the steps so far, None before any;
    a planned run uses its latest steps only. ``compiled_too``: fall back on the sitting's
    first step (which compiled) while there is no other."""
    seen = restored_per_eval + sitting_per_eval[1:]
    if not seen and compiled_too:
      seen = sitting_per_eval[:1]
    if plan_to_time_limit:
      seen = seen[-_PLAN_WINDOW:]
    return float(np.median(seen)) if seen else None

  def out_of_time(next_cost: int) -> bool:
    """Whether the next step, at the typical time per evaluation, would end past the limit
    (the same answer on every process of a multi-process run: process 0's)."""
    if max_training_seconds is None:
      return False
    per_eval = per_eval_seconds(compiled_too=True)
    if per_eval is not None:
      up = host["wall_seconds"] + per_eval * next_cost > max_training_seconds
    else:
      up = host["wall_seconds"] >= max_training_seconds
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      up = bool(multihost_utils.broadcast_one_to_all(np.asarray(up)))
    return bool(up)

  def plan_to_time(state, first: bool):
    """The state planning for the target evaluations that fit in the time left (the first
    time in a sitting: set; later: lowered when the run would end past the limit, raised
    when it would end well before it while at most ``_RAISE_WITHIN`` of the plan is spent)."""
    per_eval = per_eval_seconds(compiled_too=False) if plan_to_time_limit else None
    if per_eval is None:
      return state, first
    per_eval = max(per_eval, 1e-12)
    left = max_training_seconds - host["wall_seconds"]
    planned = new = host["planned_evals"]
    fits = min(cap, host["target_evals"] + int(_PLAN_MARGIN * max(left, 0.0) / per_eval))
    if first or host["wall_seconds"] + per_eval * (planned - host["target_evals"]) > (
        max_training_seconds):
      new = fits
    elif (host["target_evals"] <= _RAISE_WITHIN * planned
          and fits >= _RAISE_FACTOR * planned):
      new = fits
    if jax.process_count() > 1:  # every process plans process 0's budget
      from jax.experimental import multihost_utils
      new = int(multihost_utils.broadcast_one_to_all(np.asarray(new)))
    if new != planned:
      host["planned_evals"] = new
      state = replicate(method.with_budget(state, new), mesh)
      if by_evals:
        bar.total = new
      else:
        bar.total = min(method.n_steps, start + len(sitting_per_eval)
                        + max(new - host["target_evals"], 0) // max(method.evals_per_step, 1))
      bar.refresh()
    return state, False

  try:
    i = start
    cost = next_cost(state)
    time_up = out_of_time(cost)
    plan_first = True  # the first planning of this sitting sets the budget, later ones lower it
    state, plan_first = plan_to_time(state, plan_first)
    if (not plan_to_time_limit and method.with_budget is not None
        and host["planned_evals"] != cap):  # a planned run resumed without a plan: its budget
      host["planned_evals"] = cap
      state = replicate(method.with_budget(state, cap), mesh)
    while i < method.n_steps and fits(host["target_evals"], cost) and not time_up:
      k = jax.random.fold_in(key, i)
      t0 = time.perf_counter()
      if mesh is not None:
        with jax.set_mesh(mesh):
          state, info = step_fn(k, state)
      else:
        state, info = step_fn(k, state)
      info = jax.device_get(info)
      dt = time.perf_counter() - t0
      step_times.append(dt)
      sitting_per_eval.append(dt / max(cost, 1))
      host["wall_seconds"] += dt
      host["target_evals"] += cost
      host["grad_steps"] += method.grad_steps_per_step
      record = {"step": i, "target_evals": host["target_evals"],
                "grad_steps": host["grad_steps"]}
      # Empty arrays (a per-residue figure of a target without residues) are not recorded.
      record.update({k_: _scalar(v) for k_, v in info._asdict().items() if np.size(v)})
      record["timing"] = {"wall_seconds": host["wall_seconds"], "step_seconds": dt}
      records.append(record)
      if on_record is not None:
        on_record(record)
      bar.set_postfix_str(_bar_text(record, host["target_evals"]), refresh=False)
      bar.update(cost if by_evals else 1)
      state, plan_first = plan_to_time(state, plan_first)
      cost = next_cost(state)
      time_up = out_of_time(cost)
      last = i == method.n_steps - 1 or not fits(host["target_evals"], cost) or time_up
      if eval_fn is not None and (last or (eval_every and (i + 1) % eval_every == 0)):
        evaluate(i)
      host["compile_seconds"] = compile_base + _compile_estimate(step_times)
      reason = stall_reason(method, record)
      n_invalid = record.get("n_invalid")
      if i == 0 and n_invalid is not None and n_invalid >= (record.get("n_evals")
                                                            or method.evals_per_step):
        raise TargetNotFinite(
            f"the target's log density was NaN or infinite for all {n_invalid} samples of the "
            f"first step (drawn from the initial flow); check log_prob on such samples, e.g. "
            f"its domain against the flow's base scale (flow.base_scale)")
      if reason is None:
        host["stalled"], stall_reason_first = 0, None
      else:
        host["stalled"] += 1
        stall_reason_first = stall_reason_first or reason
      stop = max_stalled_steps > 0 and host["stalled"] >= max_stalled_steps
      if ckpt is not None and (last or stop or (i + 1) % checkpoint.every == 0):
        save(i + 1)
      if stop:
        raise TrainingStalled(i, stall_reason_first, host["stalled"],
                              ckpt.last_path if ckpt is not None else None)
      i += 1
  finally:
    bar.close()
    if ckpt is not None:
      ckpt.close()
  budget_left = i < method.n_steps and fits(host["target_evals"], cost)
  return TrainResult(state=state, records=records, evals=evals,
                     target_evals=host["target_evals"], grad_steps=host["grad_steps"],
                     wall_seconds=host["wall_seconds"],
                     compile_seconds=host["compile_seconds"], resumed_from=resumed_from,
                     checkpoint=ckpt.last_path if ckpt is not None else None,
                     stopped_at_time_limit=bool(budget_left and time_up),
                     planned_target_evals=host["planned_evals"] if plan_to_time_limit else None)


def _compile_estimate(step_times: list) -> float:
  """Time of the first step beyond a typical (median) later step: mostly compilation."""
  if not step_times:
    return 0.0
  typical = float(np.median(step_times[1:])) if len(step_times) > 1 else 0.0
  return max(step_times[0] - typical, 0.0)


def _bar_text(record: dict, target_evals: int) -> str:
  parts, seen = [], set()
  for key, label in _BAR_KEYS:
    v = record.get(key)
    if isinstance(v, list):
      v = min((u for u in v if u is not None), default=None)
    if v is None or label in seen:
      continue
    seen.add(label)
    parts.append(f"{label}={v:{_BAR_FORMAT.get(key, '.3g')}}")
  parts.append(f"evals={target_evals:.3g}")
  return " ".join(parts)
