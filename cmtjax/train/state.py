"""The training state and the method interface that every training method implements.

One loop (:mod:`cmtjax.train.loop`) drives every method: CMT and its ablations, reverse KL,
and the baselines. A method is a :class:`Method`: a few pure functions closed over the flow,
the target and the method's hyperparameters.

  state = method.init(key, params)
  state, info = method.step(key, state)      # jittable; one outer iteration

``info`` is a NamedTuple of scalars (the method's diagnostics for the step); the loop writes
it to ``steps.jsonl``. Every outer iteration of a method costs a fixed, static number of
target evaluations and gradient steps, so budgets are planned and accounted on the host;
a method whose cost changes between steps (CMT with a larger buffer while annealing) says
what its next step will cost (``step_evals``), and the loop stops at ``max_target_evals``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax

Array = jax.Array
Params = Any


class TrainState(NamedTuple):
  """Everything a method carries from one outer iteration to the next.

  Attributes:
    params: flow parameters (pytree).
    opt_state: optax state of the method's optimiser.
    method_state: method-specific pytree (e.g. CMT's multipliers and path).
    step: outer-iteration counter (int32 scalar).
  """

  params: Params
  opt_state: Any
  method_state: Any
  step: Array

  @classmethod
  def initial(cls, params: Params, optimizer, method_state: Any = ()) -> "TrainState":
    """The state before the first step: ``optimizer.init(params)``, step 0."""
    return cls(params=params, opt_state=optimizer.init(params), method_state=method_state,
               step=jax.numpy.zeros((), jax.numpy.int32))

  def next(self, params: Params, opt_state: Any, method_state: Any = None) -> "TrainState":
    """The state after one more step (``method_state`` None: unchanged)."""
    return TrainState(params=params, opt_state=opt_state,
                      method_state=self.method_state if method_state is None else method_state,
                      step=self.step + 1)


class Method(NamedTuple):
  """A training method, as the loop sees it.

  Attributes:
    name: method name (e.g. ``"cmt"``).
    init: ``(key, params) -> TrainState``.
    step: ``(key, TrainState) -> (TrainState, info)``, pure and jittable.
    evals_per_step: target evaluations of one step (static).
    grad_steps_per_step: optimiser steps of one step (static).
    n_steps: outer iterations the method plans for (from the budget); with ``step_evals``,
      the most it may take.
    step_evals: ``TrainState -> int``, read on the host before each step: the target
      evaluations the next step will make (None: always ``evals_per_step``).
    max_target_evals: the loop stops before a step that would exceed this many target
      evaluations in all (None: no limit beyond ``n_steps``).
    particles: for a method whose result is a weighted particle set rather than a trained
      flow (the SMC baseline): ``TrainState -> (x [N, dim], log_w [N], log_z)``; the runner
      then evaluates the particles (None: a flow method, evaluated through its flow).
    with_budget: ``(TrainState, max_target_evals) -> TrainState``, called on the host between
      steps: the state planning for another budget from now on (at most the configured
      one), for a run that must end within a time limit (the loop's ``plan_to_time_limit``;
      None: the method cannot).
  """

  name: str
  init: Callable[[Array, Params], TrainState]
  step: Callable[[Array, TrainState], tuple[TrainState, Any]]
  evals_per_step: int
  grad_steps_per_step: int
  n_steps: int
  step_evals: Optional[Callable[[TrainState], int]] = None
  max_target_evals: Optional[int] = None
  particles: Optional[Callable[[TrainState], tuple[Array, Array, Array]]] = None
  with_budget: Optional[Callable[[TrainState, int], TrainState]] = None
