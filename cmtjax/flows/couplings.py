"""Coupling layers: which coordinates each layer transforms, and with what.

A layer works on a (possibly permuted) copy of its input, split at ``dim // 2``
into a conditioning part and a transformed part (``distrax.SplitCoupling``). The
inner transform is either a rational-quadratic spline on [-box, box] with unit
slope at both ends (the identity outside the box; cmtjax's batched evaluation or
``distrax.RationalQuadraticSpline``, same function) or an affine map with a
tanh-bounded log-scale. Zero conditioner outputs give the identity in both cases.
The conditioner sees its input soft-clipped to [-2 box, 2 box] (see
``conditioner_input_bound``), so that inputs far outside the box stay harmless.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.flows.conditioner import MLPConditioner
from cmtjax.flows.config import FlowConfig
from cmtjax.flows.splines import RationalQuadraticSpline

Array = jax.Array
Params = Any


@dataclasses.dataclass(frozen=True)
class CouplingLayout:
  """Static description of one coupling layer.

  Attributes:
    perm: ``[dim]`` permutation applied to the input before the split, or
      ``None`` for none; the output is permuted back with ``inv_perm``.
    inv_perm: ``[dim]`` inverse of ``perm``, or ``None``.
    split_index: coordinates ``[:split_index]`` form the first part.
    swap: ``False``: the second part is transformed, conditioned on the first;
      ``True``: the first part is transformed, conditioned on the second.
    n_cond: number of conditioning coordinates.
    n_trans: number of transformed coordinates.
  """

  perm: Optional[np.ndarray]
  inv_perm: Optional[np.ndarray]
  split_index: int
  swap: bool
  n_cond: int
  n_trans: int


def coupling_layouts(config: FlowConfig) -> tuple[CouplingLayout, ...]:
  """Layouts of all coupling layers of a flow.

  Args:
    config: the flow configuration.

  Returns:
    One ``CouplingLayout`` per layer. Consecutive layers (2k, 2k+1) transform
    complementary halves of the same arrangement of the coordinates, so every
    coordinate is transformed at least once in any two consecutive layers.
  """
  dim = config.dim
  split = dim // 2
  rng = np.random.RandomState(config.seed_permutation)
  layouts = []
  perm = inv_perm = None
  for layer in range(config.n_layers):
    swap = layer % 2 == 1
    if config.permutation == "random" and layer % 2 == 0:
      perm = rng.permutation(dim).astype(np.int32)
      inv_perm = np.argsort(perm).astype(np.int32)
    n_first, n_second = split, dim - split
    n_cond, n_trans = (n_second, n_first) if swap else (n_first, n_second)
    layouts.append(
        CouplingLayout(perm=perm, inv_perm=inv_perm, split_index=split,
                       swap=swap, n_cond=n_cond, n_trans=n_trans))
  return tuple(layouts)


def params_per_coordinate(config: FlowConfig) -> int:
  """Number of conditioner outputs per transformed coordinate.

  Spline: K widths, K heights and the K - 1 interior knot slopes (the two
  boundary slopes are fixed to one). Affine: shift and raw log-scale.
  """
  if config.coupling == "spline":
    return 3 * config.n_bins - 1
  return 2


def conditioner_input_bound(config: FlowConfig) -> float:
  """Conditioner inputs y are soft-clipped to ``b * tanh(y / b)``, b = 2 * box."""
  return 2.0 * float(config.box)


def make_conditioner(config: FlowConfig,
                     layout: CouplingLayout) -> MLPConditioner:
  """The conditioner network of one layer."""
  return MLPConditioner(
      hidden=config.hidden,
      n_out=layout.n_trans * params_per_coordinate(config),
      activation=config.activation)


def _inner_bijector(config: FlowConfig):
  """Returns ``theta: [..., n_trans, p] -> elementwise distrax bijector``."""
  if config.coupling == "spline":
    box = float(config.box)

    def spline(theta: Array) -> distrax.Bijector:
      # theta: [..., 3K - 1] = K widths, K heights, K - 1 interior slopes. The
      # two boundary slopes are padded with zeros: distrax sets them to one.
      k = config.n_bins
      pad_width = [(0, 0)] * (theta.ndim - 1) + [(1, 1)]
      widths_heights = theta[..., :2 * k]
      slopes = jnp.pad(theta[..., 2 * k:], pad_width)
      full = jnp.concatenate([widths_heights, slopes], axis=-1)
      if config.spline_backend == "distrax":
        return distrax.RationalQuadraticSpline(
            full, range_min=-box, range_max=box, boundary_slopes="identity")
      return RationalQuadraticSpline(full, box)

    return spline

  bound = float(config.max_log_scale)

  def affine(theta: Array) -> distrax.Bijector:
    log_scale = bound * jnp.tanh(theta[..., 1] / bound)
    return distrax.ScalarAffine(shift=theta[..., 0], log_scale=log_scale)

  return affine


def make_coupling(config: FlowConfig, layout: CouplingLayout,
                  conditioner: MLPConditioner,
                  params: Params) -> distrax.SplitCoupling:
  """The coupling bijector of one layer with its conditioner parameters bound.

  Args:
    config: the flow configuration.
    layout: the layer's layout (without its permutation, applied by the caller).
    conditioner: the layer's conditioner network.
    params: the conditioner's parameters.

  Returns:
    A ``distrax.SplitCoupling`` acting on ``[batch, dim]``.
  """
  p = params_per_coordinate(config)
  bound = conditioner_input_bound(config)

  def condition(x_cond: Array) -> Array:
    # Soft-clip the conditioner's input: far-out points (|y| >> box) then get
    # the same, moderate transform of the other coordinates as points at the
    # bound, instead of extreme conditioner outputs that make the coupling
    # numerically degenerate.
    x_cond = bound * jnp.tanh(x_cond / bound)
    out = conditioner.apply({"params": params}, x_cond)
    return out.reshape(x_cond.shape[:-1] + (layout.n_trans, p))

  return distrax.SplitCoupling(
      split_index=layout.split_index,
      event_ndims=1,
      conditioner=condition,
      bijector=_inner_bijector(config),
      swap=layout.swap)


def coupling_forward(config: FlowConfig, layout: CouplingLayout,
                     conditioner: MLPConditioner, params: Params,
                     x: Array) -> tuple[Array, Array]:
  """Applies one coupling layer (with its permutation) forward.

  Args:
    config: the flow configuration.
    layout: the layer's layout.
    conditioner: the layer's conditioner network.
    params: the conditioner's parameters.
    x: [batch, dim] input.

  Returns:
    ``(y, log_det)``: y: [batch, dim], log_det: [batch].
  """
  bij = make_coupling(config, layout, conditioner, params)
  if layout.perm is not None:
    x = x[..., layout.perm]
  y, log_det = bij.forward_and_log_det(x)
  if layout.inv_perm is not None:
    y = y[..., layout.inv_perm]
  return y, log_det


def coupling_inverse(config: FlowConfig, layout: CouplingLayout,
                     conditioner: MLPConditioner, params: Params,
                     y: Array) -> tuple[Array, Array]:
  """Applies one coupling layer (with its permutation) inverse.

  Args:
    config: the flow configuration.
    layout: the layer's layout.
    conditioner: the layer's conditioner network.
    params: the conditioner's parameters.
    y: [batch, dim] output of the layer.

  Returns:
    ``(x, log_det)``: x: [batch, dim], log_det: [batch] of the inverse map.
  """
  bij = make_coupling(config, layout, conditioner, params)
  if layout.perm is not None:
    y = y[..., layout.perm]
  x, log_det = bij.inverse_and_log_det(y)
  if layout.inv_perm is not None:
    x = x[..., layout.inv_perm]
  return x, log_det
