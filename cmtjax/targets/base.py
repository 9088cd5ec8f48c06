"""The target protocol: what every distribution cmtjax learns to sample provides.

A target is a frozen dataclass of pure functions (in the spirit of jax-md's factories):
nothing in it holds hidden state, so targets can be closed over inside ``jax.jit``.

Conventions:
  * ``log_prob(x)`` is the *unnormalised* log density log p̃(x) of a batch ``x: [batch, dim]``
    and returns ``[batch]``. For molecular targets it is the reduced energy -E(x)/(k_B T) of
    Cartesian positions in nm (flattened to ``dim = 3 * n_atoms``).
  * ``log_Z`` is log ∫ p̃(x) dx where it is known (so that p = p̃ / Z), else ``None``.
  * ``sample(key, n)`` draws exact samples ``[n, dim]`` where that is possible, else ``None``.
  * ``mode_centres: [n_modes, dim]``, ``mode_weights: [n_modes]`` and ``assign_modes(x) -> [batch]``
    (integer mode index of each sample) describe targets with known, well separated modes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax

Array = jax.Array
LogProbFn = Callable[[Array], Array]
SampleFn = Callable[[Array, int], Array]
AssignFn = Callable[[Array], Array]


@dataclasses.dataclass(frozen=True)
class Target:
  """An unnormalised distribution p̃ on R^dim.

  Attributes:
    name: registry name of the target (e.g. ``"gmm40"``).
    dim: dimension of x.
    log_prob: ``x: [batch, dim] -> [batch]``, the unnormalised log density log p̃(x).
    log_Z: log normalising constant, when known.
    sample: ``(key, n) -> [n, dim]`` exact samples, when available.
    mode_centres: ``[n_modes, dim]`` centres of known modes, when available.
    mode_weights: ``[n_modes]`` true probability of each mode (sums to one).
    assign_modes: ``x: [batch, dim] -> [batch]`` int index of the mode each sample belongs to.
    plot_bounds: ``(low, high)`` box used for 2-D plots of the first two coordinates.
    info: free-form, JSON-serialisable description (parameters of the target).
    molecule: molecular targets only: a ``cmtjax.targets.molecules.MoleculeSpec`` (topology,
      Z-matrix, reference structure, energy), from which internal-coordinate flows and the
      molecular metrics are built.
  """

  name: str
  dim: int
  log_prob: LogProbFn
  log_Z: Optional[float] = None
  sample: Optional[SampleFn] = None
  mode_centres: Optional[Array] = None
  mode_weights: Optional[Array] = None
  assign_modes: Optional[AssignFn] = None
  plot_bounds: Optional[tuple[float, float]] = None
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  molecule: Optional[Any] = None

  @property
  def n_modes(self) -> Optional[int]:
    """Number of known modes, or ``None``."""
    if self.mode_weights is None:
      return None
    return int(self.mode_weights.shape[0])


def check_target(target: Target, flow_dim: Optional[int] = None) -> None:
  """Checks a target at the boundary, before any training: what it is, its dimension, and what
  its ``log_prob`` returns for a batch (by ``jax.eval_shape``: nothing is computed).

  Args:
    target: the target.
    flow_dim: the dimension of the flow that will sample it, if one is given.

  Raises:
    ValueError: naming the problem (not a Target, a bad ``dim``, a dimension mismatch with the
      flow, ``log_prob`` not callable, failing on a ``[batch, dim]`` input, or returning
      anything but a ``[batch]`` array of a floating dtype).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  if not isinstance(target, Target):
    raise ValueError(f"expected a cmtjax.Target, got {type(target).__name__}")
  import operator  # pylint: disable=g-import-not-at-top
  name = target.name
  try:
    dim = operator.index(target.dim)  # int or NumPy integer
  except TypeError:
    dim = None
  if dim is None or isinstance(target.dim, bool) or dim < 1:
    raise ValueError(f"target {name!r}: dim must be a positive int, got {target.dim!r} "
                     f"({type(target.dim).__name__})")
  if flow_dim is not None and flow_dim != dim:
    raise ValueError(f"the flow has dimension {flow_dim} but target {name!r} has dimension "
                     f"{target.dim}")
  if not callable(target.log_prob):
    raise ValueError(f"target {name!r}: log_prob is not callable")
  batch = 3
  probe = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
  try:
    out = jax.eval_shape(target.log_prob, probe)
  except Exception as e:  # the user's function: any error while tracing it
    raise ValueError(f"target {name!r}: log_prob failed on a batch x of shape "
                     f"[batch, dim] = {list(probe.shape)}: {type(e).__name__}: "
                     f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
  if not isinstance(out, jax.ShapeDtypeStruct):
    raise ValueError(f"target {name!r}: log_prob must return one array of shape [batch], got "
                     f"{type(out).__name__}")
  if out.shape != (batch,):
    hint = ""
    if out.shape == ():
      hint = " (a scalar: it must not sum or average over the batch)"
    elif out.shape == (batch, 1):
      hint = " ([batch, 1]: drop the last axis)"
    raise ValueError(f"target {name!r}: log_prob must return shape [batch] = ({batch},) for x "
                     f"of shape {list(probe.shape)}, got {tuple(out.shape)}{hint}")
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f"target {name!r}: log_prob must return a floating dtype, got {out.dtype}")
