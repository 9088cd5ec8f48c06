"""Blocked sampling and scoring (``in_blocks``): the same flow, computed block by block."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.flows import FlowConfig, make_flow
from cmtjax.flows.flow import CPU_BLOCK, in_blocks, resolve_block
from cmtjax.io.config import ConfigError, build_config
from flows_testing import perturbed_init


def test_blocks_compute_the_same_densities_and_draw_block_by_block():
  # (The wrapper sees only sample_and_log_prob and log_prob: any flow, molecular ones too.)
  whole = make_flow(FlowConfig(dim=3, n_layers=2, hidden=(8,), n_bins=4))
  params = perturbed_init(whole)
  block, n = 7, 30  # n not a multiple of the block: the last block is padded and cut
  blocked = in_blocks(whole, block)
  key = jax.random.PRNGKey(3)

  x, log_q = blocked.sample_and_log_prob(params, key, n)
  assert x.shape == (n, whole.dim) and log_q.shape == (n,)
  # Block b is the one-batch sampler with the b-th split key.
  keys = jax.random.split(key, -(-n // block))
  expected = [whole.sample_and_log_prob(params, k, block) for k in keys]
  np.testing.assert_allclose(np.asarray(x), np.concatenate([e[0] for e in expected])[:n],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(log_q), np.concatenate([e[1] for e in expected])[:n],
                             rtol=1e-5, atol=1e-4)
  # Scoring: the same values as one batch, also for a length that is not a multiple.
  np.testing.assert_allclose(np.asarray(blocked.log_prob(params, x)),
                             np.asarray(whole.log_prob(params, x)), rtol=1e-5, atol=1e-4)
  # Batches of at most one block are left alone: the very same samples as before.
  xs, lqs = blocked.sample_and_log_prob(params, key, block)
  xw, lqw = whole.sample_and_log_prob(params, key, block)
  np.testing.assert_array_equal(np.asarray(xs), np.asarray(xw))
  np.testing.assert_array_equal(np.asarray(lqs), np.asarray(lqw))


def test_gradients_flow_through_blocked_sampling():
  whole = make_flow(FlowConfig(dim=2, n_layers=2, hidden=(8,), n_bins=4))
  params = perturbed_init(whole)
  blocked = in_blocks(whole, 5)
  key = jax.random.PRNGKey(4)

  def loss(sampler, p):
    x, log_q = sampler(p, key, 5)  # one block: the same computation both ways
    return jnp.mean(log_q + jnp.sum(x ** 2, -1))

  g_blocked = jax.grad(lambda p: loss(blocked.sample_and_log_prob, p))(params)
  g_whole = jax.grad(lambda p: loss(whole.sample_and_log_prob, p))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               g_blocked, g_whole)
  g_many = jax.grad(lambda p: jnp.mean(blocked.sample_and_log_prob(p, key, 23)[1]))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(g_many))


def test_block_settings():
  assert resolve_block(0) == 0 and resolve_block(64) == 64
  assert resolve_block("auto") == (CPU_BLOCK if jax.default_backend() == "cpu" else 0)
  for bad in (-1, "big", 2.5, True):
    with pytest.raises(ValueError, match="block"):
      resolve_block(bad)
  assert build_config([]).distributed.block == 0  # whole batches unless asked for
  assert build_config([{"distributed": {"block": 256}}]).distributed.block == 256
  for bad in (-3, True, "big"):  # the config rejects what the flow would (one check for both)
    with pytest.raises(ConfigError, match="block"):
      build_config([{"distributed": {"block": bad}}])
