"""Shared helpers of the method tests: a small flow, a Gaussian target, counting wrappers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.flows import FlowConfig, make_flow
from cmtjax.metrics import reverse_ess
from cmtjax.targets.base import Target

SMALL_FLOW = dict(coupling="spline", n_layers=2, hidden=(16,), n_bins=8, base_scale=2.0)


def small_flow(dim: int = 2):
  return make_flow(FlowConfig(dim=dim, **SMALL_FLOW))


def gauss_target(mu=(1.0, -1.0), s=0.5, with_sample=True) -> Target:
  """N(mu, s² I) in 2-D with its exact log Z = 0 and exact samples."""
  mu = jnp.asarray(mu, jnp.float32)

  def log_prob(x):
    return (-0.5 * jnp.sum(((x - mu) / s) ** 2, -1) - mu.shape[0] * jnp.log(s)
            - 0.5 * mu.shape[0] * jnp.log(2 * jnp.pi))

  def sample(key, n):
    return mu + s * jax.random.normal(key, (n, mu.shape[0]))

  return Target(name="gauss", dim=int(mu.shape[0]), log_prob=log_prob, log_Z=0.0,
                sample=sample if with_sample else None)


class Counter:
  """Counts rows seen at run time (inside jit, scan, cond and autodiff)."""

  def __init__(self):
    self.n = 0

  def add(self, n):
    self.n += int(n)

  @property
  def value(self) -> int:
    jax.effects_barrier()
    return self.n


def counting(target: Target) -> tuple[Target, Counter, Counter]:
  """``target`` whose log_prob and sample count the rows they are called on.

  Returns:
    ``(wrapped target, log_prob counter, sample counter)``.
  """
  c_lp, c_s = Counter(), Counter()

  def log_prob(x):
    # The rows are read from the array itself, so that a call under vmap (SMC evaluates
    # one particle at a time, vmapped) counts every particle.
    jax.debug.callback(lambda a: c_lp.add(int(np.prod(np.shape(a)[:-1]))), x)
    return target.log_prob(x)

  sample = None
  if target.sample is not None:
    def sample(key, n):
      jax.debug.callback(c_s.add, n)
      return target.sample(key, n)

  return dataclasses.replace(target, log_prob=log_prob, sample=sample), c_lp, c_s


def model_ess(flow, params, target: Target, n: int = 20_000, seed: int = 5) -> float:
  """Reverse ESS of the flow against the target on n fresh samples."""
  x, lq = flow.sample_and_log_prob(params, jax.random.PRNGKey(seed), n)
  return float(reverse_ess(target.log_prob(x) - lq))
