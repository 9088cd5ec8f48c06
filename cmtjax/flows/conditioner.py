"""Conditioner networks of the coupling layers (flax.linen MLPs)."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

Array = jax.Array

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": nn.tanh,
}


class MLPConditioner(nn.Module):
  """Dense network whose last layer starts at zero (kernel and bias).

  With a zero last layer the conditioner outputs zeros for every input, which the
  couplings of cmtjax map to the identity transform.

  Attributes:
    hidden: widths of the hidden layers (may be empty: one zero Dense layer).
    n_out: number of outputs.
    activation: name of a smooth activation (``"gelu"``, ``"silu"``, ``"tanh"``).
  """

  hidden: tuple[int, ...]
  n_out: int
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Evaluates the network.

    Args:
      x: [batch, n_in] the unchanged part of the coupling input.

    Returns:
      [batch, n_out] unconstrained parameters of the inner transform.
    """
    act = _ACTIVATIONS[self.activation]
    for width in self.hidden:
      x = act(nn.Dense(width)(x))
    return nn.Dense(
        self.n_out,
        kernel_init=nn.initializers.zeros_init(),
        bias_init=nn.initializers.zeros_init())(x)
