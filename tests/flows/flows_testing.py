"""Shared helpers of the cmtjax flow tests (small, cached flows)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from cmtjax.flows import FlowConfig, make_flow


BATCH = 64
# (dim, coupling, permutation, base_scale): the flows every test module shares.
# (dim, coupling, permutation, base_scale, n_layers): the flows every test module
# shares.
CASES = [
    (2, "spline", "alternate", 1.0, 2), (3, "spline", "random", 2.5, 2),
    (2, "affine", "alternate", 0.5, 2), (5, "affine", "random", 3.0, 3),
]
PERTURBATION = {"spline": 0.1, "affine": 0.15}
# Milder perturbations for quadratures (no sharp density peaks).
SMOOTH_PERTURBATION = {"spline": 0.05, "affine": 0.15}


@functools.lru_cache(maxsize=None)
def small_flow(dim: int, coupling: str, permutation: str = "alternate",
               base_scale: float = 1.0, n_layers: int = 2,
               spline_backend: str = "cmtjax"):
  """A small flow (so that tests compile fast; use batch ``BATCH`` to share
  compiled functions between tests)."""
  config = FlowConfig(dim=dim, coupling=coupling, n_layers=n_layers,
                      hidden=(16, 16), n_bins=8, box=4.0, base_scale=base_scale,
                      permutation=permutation, spline_backend=spline_backend)
  return make_flow(config)


@functools.partial(jax.jit, static_argnames=("scale",))
def perturb(params, key, scale: float):
  """Adds Gaussian noise to every leaf so the flow is not the identity."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [
      leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype)
      for leaf, k in zip(leaves, keys)
  ])


def perturbed_init(flow, scale: float = 0.1):
  """Any flow's initial parameters (key 0) with Gaussian noise on every leaf (key 1)."""
  return perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), scale)


@functools.lru_cache(maxsize=None)
def perturbed_params(dim: int, coupling: str, permutation: str = "alternate",
                     base_scale: float = 1.0, n_layers: int = 2, seed: int = 0):
  flow = small_flow(dim, coupling, permutation, base_scale, n_layers)
  params = flow.init(jax.random.key(seed))
  # Strong enough to move samples by O(1), weak enough that the float32 inverse
  # stays well conditioned (log-dets of a few nats, not tens).
  return perturb(params, jax.random.key(seed + 100), PERTURBATION[coupling])


@jax.jit
def gaussian_log_prob(x, scale: float):
  """log N(x; 0, scale^2 I) per row. x: [batch, dim] -> [batch]."""
  return jnp.sum(jax.scipy.stats.norm.logpdf(x, scale=scale), axis=-1)
