"""Temperature ladders: the one geometric ladder that TA-BG, the tempered fixed schedule and
replica exchange all use."""

from __future__ import annotations

import numpy as np


def geometric_ladder(t_cold: float, t_hot: float, n: int) -> np.ndarray:
  """``[n]`` temperatures t_cold · (t_hot / t_cold)^(k / (n − 1)), k = 0 … n − 1, ascending.

  Both ends are included; a ladder of one rung is ``[t_cold]``. Reverse it for an annealing
  ladder that starts hot (``geometric_ladder(T, T_max, n)[::-1]``).

  Raises:
    ValueError: unless n >= 1 and 0 < t_cold <= t_hot.
  """
  if int(n) < 1 or not 0 < t_cold <= t_hot:
    raise ValueError(f"a geometric temperature ladder needs n >= 1 and 0 < t_cold <= t_hot, "
                     f"got n={n}, t_cold={t_cold}, t_hot={t_hot}")
  if int(n) == 1:
    return np.array([float(t_cold)])
  return float(t_cold) * (float(t_hot) / float(t_cold)) ** (np.arange(int(n)) / (int(n) - 1))
