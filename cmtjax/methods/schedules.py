"""Fixed annealing schedules, expressed as per-step multipliers of the CMT step.

A fixed schedule replaces the dual solve by a precomputed (λ_i, η_i) per step, so the fixed
baselines run through exactly the same step (buffer, weights, fit) and budget accounting as
CMT:

  * geometric path with a β schedule (q_i ∝ q_0^{1−β_i} p̃^{β_i}): the step from β_i to
    β_{i+1} is q_{i+1} ∝ q_i^a p̃^{1−a}·(…) with a = (1 − β_{i+1}) / (1 − β_i), i.e.
    λ_i = a / (1 − a), η_i = 0 (the p̃ exponents add up to β_{i+1} by the bookkeeping of
    :mod:`cmtjax.cmt.paths`);
      - ``"linear_beta"``: β_i = i / I,
      - ``"geometric_beta"``: β_i = β_1^{(I−i)/(I−1)} (geometric from β_1 = ``beta_min`` to 1);
  * tempered path with a geometric temperature ladder (``"geometric_temperature"``):
    T_i = T_max (T/T_max)^{i/(I−1)}, q_{i+1} ∝ p̃^{T/T_i}, i.e. λ_i = 0, η_i = T_i/T − 1
    (the first step fits p̃ at T_max, the last one p̃ at T).
After I steps every schedule is at the target (λ = η = 0).
"""

from __future__ import annotations

import numpy as np

from cmtjax.sampling.temperatures import geometric_ladder

SCHEDULES = ("adaptive", "linear_beta", "geometric_beta", "geometric_temperature")


def beta_schedule(kind: str, n_steps: int, beta_min: float = 1e-3) -> np.ndarray:
  """β_0 = 0, …, β_I = 1 (``[I + 1]``)."""
  i = np.arange(n_steps + 1, dtype=np.float64)
  if kind == "linear_beta":
    return i / n_steps
  if kind == "geometric_beta":
    if n_steps == 1:
      return np.array([0.0, 1.0])
    b = beta_min ** ((n_steps - i) / (n_steps - 1))
    b[0] = 0.0
    return b
  raise ValueError(f"unknown beta schedule {kind!r}")


def fixed_multipliers(kind: str, n_steps: int, *, beta_min: float = 1e-3,
                      t_max_ratio: float = 4.0) -> np.ndarray:
  """Per-step multipliers ``[I, 2]`` = (λ_i, η_i) of a fixed schedule of I steps.

  Args:
    kind: ``"linear_beta"``, ``"geometric_beta"`` or ``"geometric_temperature"``.
    n_steps: I, the number of annealing steps.
    beta_min: first positive β of ``"geometric_beta"``.
    t_max_ratio: T_max / T of ``"geometric_temperature"``.

  Returns:
    ``[I, 2]`` float64 array; its last row is (0, 0).
  """
  if n_steps < 1:
    raise ValueError(f"a fixed schedule needs at least one step, got {n_steps}")
  if kind in ("linear_beta", "geometric_beta"):
    beta = beta_schedule(kind, n_steps, beta_min)
    a = (1.0 - beta[1:]) / (1.0 - beta[:-1])
    lam = np.where(a < 1.0, a / np.where(a < 1.0, 1.0 - a, 1.0), np.inf)
    return np.stack([lam, np.zeros(n_steps)], axis=1)
  if kind == "geometric_temperature":
    if not t_max_ratio >= 1.0:
      raise ValueError(f"t_max_ratio must be >= 1, got {t_max_ratio}")
    ratios = geometric_ladder(1.0, t_max_ratio, n_steps)[::-1]  # T_i / T
    return np.stack([np.zeros(n_steps), ratios - 1.0], axis=1)
  raise ValueError(f"unknown schedule {kind!r}; known: {', '.join(SCHEDULES)}")
