"""A coupling normalizing flow as pure functions over a params pytree.

Spaces and densities:
  * z ~ N(0, I) is the base variable;
  * the coupling layers map z to standardised coordinates y (the spline box
    [-box, box] lives here);
  * a fixed scaling gives x = base_scale * y, so the base density in x-space is
    N(0, base_scale^2 I).
All log densities returned here are densities in x-space (the space of the
samples). With zero-initialised conditioners every coupling is the identity, so at
``init`` the flow is x = base_scale * z and log q(x) = log N(x; 0, base_scale^2 I).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from cmtjax.flows.config import FlowConfig
from cmtjax.flows.couplings import cartesian_couplings
from cmtjax.io.config import check_block

Array = jax.Array
Params = Any


class Flow(NamedTuple):
  """A normalizing flow as pure functions (all jitted; ``n`` is static).

  Attributes:
    config: the configuration the flow was built from.
    init: ``init(key) -> params``, a pytree of float32 arrays.
    sample_and_log_prob: ``(params, key, n) -> (x: [n, dim], log_q: [n])``,
      reparameterised samples and their x-space log density (differentiable
      w.r.t. ``params``).
    log_prob: ``(params, x: [batch, dim]) -> [batch]``, x-space log density.
    forward: ``(params, z: [batch, dim]) -> (x: [batch, dim], log_det: [batch])``,
      the map from base (standardised) z to x and log |det dx/dz|.
    inverse: ``(params, x: [batch, dim]) -> (z: [batch, dim], log_det: [batch])``,
      the map from x to z and log |det dz/dx|.
    base_sample: ``(key, n) -> z: [n, dim_z]``, draws of the base variable.
    base_log_prob: ``z: [batch, dim_z] -> [batch]``, the base log density (-inf outside
      its support).
    base_wrap: ``z -> z``, maps a point of the base space to its canonical representative
      (periodic base coordinates, e.g. the free dihedrals of a molecular flow, are taken
      modulo their period; the identity for a Gaussian base). Samplers that move in base
      space (:mod:`cmtjax.methods.smc`) evaluate the base and ``forward`` at
      ``base_wrap(z)``. These three are None for a flow built elsewhere that does not
      provide them.
    initial_forward: ``z: [batch, dim_z] -> (x, log_det)``, ``forward`` at the parameters
      of ``init`` (every coupling the identity) without evaluating the couplings: the flow's
      fixed maps alone (a scaling, or a molecule's internal-coordinate map). Samplers that
      pull the target back through the untrained flow use it (:mod:`cmtjax.methods.smc`).
      None where the flow does not provide it.
    initial_log_prob: ``x: [batch, dim] -> [batch]``, ``log_prob`` at the parameters of
      ``init`` from the fixed maps alone (q_0, the start of CMT's path; an anchored CMT step
      evaluates it on every buffer, :attr:`cmtjax.methods.cmt.CMTConfig.anchor`). None where
      the flow does not provide it.
  """

  config: FlowConfig
  init: Callable[[Array], Params]
  sample_and_log_prob: Callable[[Params, Array, int], tuple[Array, Array]]
  log_prob: Callable[[Params, Array], Array]
  forward: Callable[[Params, Array], tuple[Array, Array]]
  inverse: Callable[[Params, Array], tuple[Array, Array]]
  base_sample: Optional[Callable[[Array, int], Array]] = None
  base_log_prob: Optional[Callable[[Array], Array]] = None
  base_wrap: Optional[Callable[[Array], Array]] = None
  initial_forward: Optional[Callable[[Array], tuple[Array, Array]]] = None
  initial_log_prob: Optional[Callable[[Array], Array]] = None

  @property
  def dim(self) -> int:
    """The dimension of x (``config.dim``)."""
    return self.config.dim


# Block size of the "auto" setting on a CPU: a block's activations (a few MB per layer) stay in
# cache. Drawing 1e5 alanine-dipeptide samples (flow and energy) this way was 1.4x faster than
# one batch on 2 cores shared with another job, but only 1.03x on 2 idle cores
# (benchmarks/flow_profile.py), so it is not the default; on accelerators one large batch is
# faster.
CPU_BLOCK = 1024


def resolve_block(block) -> int:
  """The block size meant by a ``block`` setting: an int (0: whole batches), or ``"auto"``
  (:data:`CPU_BLOCK` on a CPU backend, 0 on GPU/TPU)."""
  check_block(block)
  if block == "auto":
    return CPU_BLOCK if jax.default_backend() == "cpu" else 0
  return block


def in_blocks(flow: "Flow", block) -> "Flow":
  """The same flow, drawing and scoring batches larger than ``block`` in blocks of ``block``
  rows (a ``jax.lax.map`` over blocks, so memory and cache traffic stay bounded).

  Sampling draws block b with ``jax.random.split(key, n_blocks)[b]``: for n > block the
  samples differ from one-batch sampling with the same key (same distribution); batches of at
  most ``block`` rows are unchanged. ``log_prob`` gives the same values either way.

  Args:
    flow: any :class:`Flow`.
    block: rows per block, ``"auto"`` or 0 (the flow unchanged), see :func:`resolve_block`.
  """
  block = resolve_block(block)
  if block == 0:
    return flow
  sample, log_prob = flow.sample_and_log_prob, flow.log_prob

  @jax.jit(static_argnames=("n",))
  def sample_and_log_prob(params: Params, key: Array, n: int) -> tuple[Array, Array]:
    if n <= block:
      return sample(params, key, n)
    n_blocks = -(-n // block)
    x, log_q = jax.lax.map(lambda k: sample(params, k, block), jax.random.split(key, n_blocks))
    return x.reshape(n_blocks * block, -1)[:n], log_q.reshape(-1)[:n]

  @jax.jit
  def blocked_log_prob(params: Params, x: Array) -> Array:
    n = x.shape[0]
    if x.ndim != 2 or n <= block:
      return log_prob(params, x)
    n_blocks = -(-n // block)
    padded = jnp.concatenate([x, jnp.broadcast_to(x[:1], (n_blocks * block - n,) + x.shape[1:])])
    out = jax.lax.map(lambda xb: log_prob(params, xb), padded.reshape(n_blocks, block, -1))
    return out.reshape(-1)[:n]

  return flow._replace(sample_and_log_prob=sample_and_log_prob, log_prob=blocked_log_prob)


def _layer_name(layer: int) -> str:
  return f"coupling_{layer}"


def standard_normal_log_prob(z: Array) -> Array:
  """log N(z; 0, I) per sample. z: [batch, dim] -> [batch]."""
  dim = z.shape[-1]
  return -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * dim * math.log(2.0 * math.pi)


def make_flow(config: FlowConfig) -> Flow:
  """Builds a coupling flow from its configuration.

  Args:
    config: a validated ``FlowConfig``.

  Returns:
    A ``Flow`` of pure, jitted functions. ``params`` is a dict with one entry
    ``"coupling_<l>"`` (the flax parameters of the conditioner) per layer.
  """
  if not isinstance(config, FlowConfig):
    raise TypeError(f"make_flow expects a FlowConfig, got {type(config)!r}")
  dim = config.dim
  layers = cartesian_couplings(config)
  log_scale = math.log(config.base_scale)
  scale_log_det = dim * log_scale

  @jax.jit
  def init(key: Array) -> Params:
    """Initial parameters: every coupling is the identity.

    Args:
      key: PRNG key.

    Returns:
      The params pytree.
    """
    keys = jax.random.split(key, len(layers))
    return {_layer_name(n): layer.init(keys[n]) for n, layer in enumerate(layers)}

  def _check(x: Array, name: str) -> None:
    if x.ndim != 2 or x.shape[-1] != dim:
      raise ValueError(
          f"{name} must have shape [batch, {dim}], got {tuple(x.shape)}")

  def _forward(params: Params, z: Array) -> tuple[Array, Array]:
    y = z
    log_det = jnp.zeros(z.shape[:-1], z.dtype)
    for n, layer in enumerate(layers):
      y, ld = layer.forward(params[_layer_name(n)], y)
      log_det = log_det + ld
    return config.base_scale * y, log_det + scale_log_det

  def _inverse(params: Params, x: Array) -> tuple[Array, Array]:
    y = x / config.base_scale
    log_det = jnp.full(x.shape[:-1], -scale_log_det, x.dtype)
    for n in reversed(range(len(layers))):
      y, ld = layers[n].inverse(params[_layer_name(n)], y)
      log_det = log_det + ld
    return y, log_det

  @jax.jit
  def forward(params: Params, z: Array) -> tuple[Array, Array]:
    """Maps base samples to x.

    Args:
      params: flow parameters.
      z: [batch, dim] standardised base variables.

    Returns:
      ``(x, log_det)``: x: [batch, dim]; log_det: [batch] = log |det dx/dz|
      (including the ``dim * log(base_scale)`` of the final scaling).
    """
    _check(z, "z")
    x, log_det = _forward(params, z)
    chex.assert_shape(log_det, z.shape[:1])
    return x, log_det

  @jax.jit
  def inverse(params: Params, x: Array) -> tuple[Array, Array]:
    """Maps x back to the base variable.

    Args:
      params: flow parameters.
      x: [batch, dim] points in x-space.

    Returns:
      ``(z, log_det)``: z: [batch, dim]; log_det: [batch] = log |det dz/dx|.
    """
    _check(x, "x")
    return _inverse(params, x)

  @jax.jit
  def log_prob(params: Params, x: Array) -> Array:
    """x-space log density of the flow.

    Args:
      params: flow parameters.
      x: [batch, dim] points in x-space.

    Returns:
      [batch] log q(x).
    """
    _check(x, "x")
    z, log_det = _inverse(params, x)
    return standard_normal_log_prob(z) + log_det

  @jax.jit(static_argnames=("n",))
  def sample_and_log_prob(params: Params, key: Array,
                          n: int) -> tuple[Array, Array]:
    """Reparameterised samples and their log density.

    Args:
      params: flow parameters.
      key: PRNG key.
      n: number of samples (static Python int).

    Returns:
      ``(x, log_q)``: x: [n, dim] samples of q; log_q: [n] their x-space log
      density. Both are differentiable w.r.t. ``params``.
    """
    z = jax.random.normal(key, (n, dim), jnp.float32)
    x, log_det = _forward(params, z)
    return x, standard_normal_log_prob(z) - log_det

  @jax.jit
  def initial_forward(z: Array) -> tuple[Array, Array]:
    """``forward`` at ``init``: the base scaling alone."""
    _check(z, "z")
    return config.base_scale * z, jnp.full(z.shape[:-1], scale_log_det, z.dtype)

  @jax.jit
  def initial_log_prob(x: Array) -> Array:
    """``log_prob`` at ``init``: the scaled base density."""
    _check(x, "x")
    return standard_normal_log_prob(x / config.base_scale) - scale_log_det

  return Flow(config=config, init=init,
              sample_and_log_prob=sample_and_log_prob, log_prob=log_prob,
              forward=forward, inverse=inverse,
              base_sample=lambda key, n: jax.random.normal(key, (n, dim), jnp.float32),
              base_log_prob=standard_normal_log_prob, base_wrap=lambda z: z,
              initial_forward=initial_forward, initial_log_prob=initial_log_prob)
