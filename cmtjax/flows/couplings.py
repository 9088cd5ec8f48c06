"""Coupling layers: the one implementation behind Cartesian and internal-coordinate flows.

A coupling layer transforms some coordinates of y (``trans_idx``) elementwise, with parameters
that an MLP computes from the others (``cond_idx``):

    y[trans] <- tau_theta(y[trans]),     theta = MLP(features(y[cond])),

and leaves y[cond] as it is, so its log-determinant is the sum of the elementwise ones. The
features are the conditioning coordinates themselves, soft-clipped to b tanh(y / b) where the
flow asks for it (Cartesian flows: b = 2 box, so that far-out points get the same, moderate
transform as points at the bound), except circular coordinates (free dihedrals scaled to
[-1, 1)), which enter as (cos pi y, sin pi y). The inner transform tau is

  * a rational-quadratic spline on [-box, box] with unit slope at both ends, the identity
    outside (cmtjax's batched evaluation, or distrax's, the same function, kept as a
    reference: ``spline_backend="distrax"``), or
  * an affine map y -> exp(s) y + t with a tanh-bounded log-scale s.

Zero conditioner outputs give the identity in both cases. Which coordinates each layer uses
is the flow's business: :func:`cartesian_couplings` here, the internal-coordinate flow in
:mod:`cmtjax.flows.molecular`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.flows.conditioner import MLPConditioner
from cmtjax.flows.config import FlowConfig
from cmtjax.flows.splines import RationalQuadraticSpline

Array = jax.Array
Params = Any


class Affine:
  """Elementwise y = exp(log_scale) x + shift (arrays broadcast against the input)."""

  def __init__(self, shift: Array, log_scale: Array):
    self.shift, self.log_scale = shift, log_scale

  def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
    return jnp.exp(self.log_scale) * x + self.shift, jnp.broadcast_to(self.log_scale, x.shape)

  def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
    return (y - self.shift) * jnp.exp(-self.log_scale), jnp.broadcast_to(-self.log_scale,
                                                                           y.shape)


def params_per_coordinate(config: FlowConfig) -> int:
  """Conditioner outputs per transformed coordinate: spline: K widths, K heights and the
  K − 1 interior knot slopes (the two boundary slopes are fixed to one); affine: shift and
  raw log-scale."""
  return 3 * config.n_bins - 1 if config.coupling == "spline" else 2


def inner_transform(config: FlowConfig, box: float) -> Callable[[Array], Any]:
  """``theta: [..., params_per_coordinate] -> elementwise transform`` (an object with
  ``forward_and_log_det`` and ``inverse_and_log_det``)."""
  if config.coupling == "affine":
    bound = float(config.max_log_scale)
    return lambda theta: Affine(theta[..., 0], bound * jnp.tanh(theta[..., 1] / bound))
  k = config.n_bins

  def spline(theta: Array):
    # K widths, K heights, K - 1 interior slopes; the two boundary slopes are padded with
    # zeros, which both spline implementations read as slope one.
    pad = [(0, 0)] * (theta.ndim - 1) + [(1, 1)]
    full = jnp.concatenate([theta[..., :2 * k], jnp.pad(theta[..., 2 * k:], pad)], axis=-1)
    if config.spline_backend == "distrax":
      try:
        import distrax  # noqa: PLC0415 - the reference backend, installed with the tests
      except ImportError:
        raise ImportError("flow.spline_backend='distrax' needs distrax (pip install "
                          "'cmtjax[test]'); the default backend 'cmtjax' computes the same "
                          "function") from None
      return distrax.RationalQuadraticSpline(full, range_min=-box, range_max=box,
                                             boundary_slopes="identity")
    return RationalQuadraticSpline(full, box)

  return spline


@dataclasses.dataclass(frozen=True, eq=False)
class Coupling:
  """One coupling layer (static structure; its parameters are passed in).

  Attributes:
    cond_idx: ``[n_cond]`` coordinates the conditioner sees, in this order.
    trans_idx: ``[n_trans]`` coordinates the layer transforms.
    cond_circular: ``[n_cond]`` bool, circular conditioning coordinates (fed as cos, sin).
    input_bound: soft clip b of the other conditioning coordinates (None: none).
    n_params: conditioner outputs per transformed coordinate.
    transform: ``theta -> elementwise transform`` (:func:`inner_transform`).
    net: the conditioner MLP.
  """

  cond_idx: np.ndarray
  trans_idx: np.ndarray
  cond_circular: np.ndarray
  input_bound: Optional[float]
  n_params: int
  transform: Callable[[Array], Any]
  net: MLPConditioner

  @property
  def n_features(self) -> int:
    """Width of the conditioner's input."""
    circ = self.cond_circular
    return int(np.sum(~circ) + 2 * np.sum(circ))

  def init(self, key: Array) -> Params:
    """The conditioner's parameters (its last layer is zero: the layer is the identity)."""
    return self.net.init(key, jnp.zeros((1, self.n_features), jnp.float32))["params"]

  def features(self, y_cond: Array) -> Array:
    """The conditioner's input from the conditioning coordinates ``[batch, n_cond]``."""
    circ = self.cond_circular
    flat = y_cond[:, ~circ] if np.any(circ) else y_cond
    if self.input_bound is not None:
      flat = self.input_bound * jnp.tanh(flat / self.input_bound)
    if not np.any(circ):
      return flat
    angle = jnp.pi * y_cond[:, circ]
    parts = [flat] if np.any(~circ) else []
    return jnp.concatenate(parts + [jnp.cos(angle), jnp.sin(angle)], axis=-1)

  def _take(self, y: Array, idx: np.ndarray) -> Array:
    # A contiguous, increasing index set is a slice (cheaper than a gather).
    if np.all(np.diff(idx) == 1):
      return y[:, int(idx[0]):int(idx[-1]) + 1]
    return y[:, idx]

  def _put(self, y: Array, out: Array) -> Array:
    idx = self.trans_idx
    if np.all(np.diff(idx) == 1):
      return jax.lax.dynamic_update_slice_in_dim(y, out, int(idx[0]), axis=1)
    return y.at[:, idx].set(out)

  def _transform(self, params: Params, y: Array):
    theta = self.net.apply({"params": params}, self.features(self._take(y, self.cond_idx)))
    return self.transform(theta.reshape(y.shape[0], len(self.trans_idx), self.n_params))

  def forward(self, params: Params, y: Array) -> tuple[Array, Array]:
    """``(y', log |det dy'/dy|)`` for ``y: [batch, dim]``."""
    out, log_det = self._transform(params, y).forward_and_log_det(
        self._take(y, self.trans_idx))
    return self._put(y, out), jnp.sum(log_det, -1)

  def inverse(self, params: Params, y: Array) -> tuple[Array, Array]:
    """``(y, log |det dy/dy'|)``: the layer undone, for ``y: [batch, dim]`` (its output)."""
    out, log_det = self._transform(params, y).inverse_and_log_det(
        self._take(y, self.trans_idx))
    return self._put(y, out), jnp.sum(log_det, -1)


def cartesian_couplings(config: FlowConfig) -> tuple[Coupling, ...]:
  """The coupling layers of a Cartesian flow on R^dim.

  Layers come in pairs on one arrangement of the coordinates (the identity, or a fixed random
  permutation per pair with ``permutation="random"``) split at dim // 2: the even layer
  transforms the second part conditioned on the first, the odd layer the first conditioned
  on the second, so every coordinate is transformed once per pair.
  """
  dim, split = config.dim, config.dim // 2
  rng = np.random.RandomState(config.seed_permutation)
  transform = inner_transform(config, float(config.box))
  n_params = params_per_coordinate(config)
  order = np.arange(dim)
  layers = []
  for layer in range(config.n_layers):
    if config.permutation == "random" and layer % 2 == 0:
      order = rng.permutation(dim)
    first, second = order[:split], order[split:]
    cond, trans = (second, first) if layer % 2 else (first, second)
    layers.append(Coupling(
        cond_idx=cond.astype(np.int32), trans_idx=trans.astype(np.int32),
        cond_circular=np.zeros(len(cond), bool), input_bound=2.0 * float(config.box),
        n_params=n_params, transform=transform,
        net=MLPConditioner(hidden=config.hidden, n_out=len(trans) * n_params,
                           activation=config.activation)))
  return tuple(layers)
