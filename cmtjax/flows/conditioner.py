"""Conditioner networks of the coupling layers (flax.linen MLPs)."""

from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax
import numpy as np

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
    out_order: output i is the last layer's unit ``out_order[i]`` (its kernel columns are
      gathered, so the parameters and their names are those of the plain network); None:
      the units in order. Lets a coupling read its parameters in the layout it computes in.
  """

  hidden: tuple[int, ...]
  n_out: int
  activation: str = "gelu"
  out_order: Optional[tuple[int, ...]] = None

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
    if self.out_order is None:
      return nn.Dense(
          self.n_out,
          kernel_init=nn.initializers.zeros_init(),
          bias_init=nn.initializers.zeros_init())(x)
    return _ReorderedDense(self.n_out, self.out_order, name=f"Dense_{len(self.hidden)}")(x)


class _ReorderedDense(nn.Module):
  """A zero-initialised Dense layer (same parameters as ``nn.Dense``) whose outputs come in
  the order ``order``."""

  n_out: int
  order: tuple[int, ...]

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.initializers.zeros_init(), (x.shape[-1], self.n_out))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.n_out,))
    order = np.asarray(self.order)
    return x @ kernel[:, order] + bias[order]
