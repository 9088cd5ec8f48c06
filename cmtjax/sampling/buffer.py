"""A prioritised replay buffer of weighted samples (FAB's buffer), as a pure state.

The buffer holds AIS samples x with log importance weights log w toward p̃²/q and the model
log density log q_old(x) at the time the weight was last brought up to date. Minibatches are
drawn without replacement with probability ∝ w (Gumbel top-k). When the flow moves from
q_old to q_new the target p̃²/q changes by q_old/q_new, so a drawn sample's weight is
re-weighted by

    log w ← log w + log q_old(x) − log q_new(x),      log q_old ← log q_new

(:func:`buffer_adjust`); samples not drawn keep their older weights until they are drawn.
Storage is circular: each :func:`buffer_add` overwrites the oldest block. Empty slots carry
log w = −inf and are never drawn.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


class ReplayBuffer(NamedTuple):
  """Buffer state.

  Attributes:
    x: ``[capacity, dim]`` samples.
    log_w: ``[capacity]`` log weights (−inf: empty or invalid).
    log_q: ``[capacity]`` log q of the flow the weight was last adjusted to.
    position: int32 scalar, where the next block is written.
    size: int32 scalar, filled slots.
  """

  x: Array
  log_w: Array
  log_q: Array
  position: Array
  size: Array


def buffer_init(capacity: int, dim: int, dtype=jnp.float32) -> ReplayBuffer:
  """An empty buffer of ``capacity`` slots for ``dim``-dimensional samples."""
  if capacity < 1:
    raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
  return ReplayBuffer(x=jnp.zeros((capacity, dim), dtype),
                      log_w=jnp.full((capacity,), -jnp.inf, dtype),
                      log_q=jnp.zeros((capacity,), dtype),
                      position=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def buffer_add(buf: ReplayBuffer, x: Array, log_w: Array, log_q: Array) -> ReplayBuffer:
  """Writes a block of n samples at ``position`` (circular; capacity must be a multiple of n).

  Args:
    buf: the buffer.
    x: ``[n, dim]`` samples.
    log_w: ``[n]`` log weights (non-finite entries are stored as −inf).
    log_q: ``[n]`` log q(x) of the current flow.
  """
  n = x.shape[0]
  cap = buf.x.shape[0]
  if cap % n:
    raise ValueError(f"buffer capacity {cap} must be a multiple of the block size {n}")
  chex.assert_shape([log_w, log_q], (n,))
  ok = jnp.isfinite(log_w) & jnp.isfinite(log_q) & jnp.all(jnp.isfinite(x), axis=-1)
  log_w = jnp.where(ok, log_w, -jnp.inf)
  log_q = jnp.where(ok, log_q, 0.0)
  x = jnp.where(ok[:, None], x, 0.0)
  pos = buf.position
  return ReplayBuffer(
      x=jax.lax.dynamic_update_slice(buf.x, x.astype(buf.x.dtype), (pos, 0)),
      log_w=jax.lax.dynamic_update_slice(buf.log_w, log_w.astype(buf.log_w.dtype), (pos,)),
      log_q=jax.lax.dynamic_update_slice(buf.log_q, log_q.astype(buf.log_q.dtype), (pos,)),
      position=(pos + n) % cap, size=jnp.minimum(buf.size + n, cap))


def buffer_sample(buf: ReplayBuffer, key: Array, n: int) -> tuple[Array, Array]:
  """Draws n distinct slots with probability ∝ w (Gumbel top-k, without replacement).

  Returns:
    ``(idx: [n] int32, valid: [n] bool)``; ``valid`` is False for slots with log w = −inf
    (only drawn when fewer than n slots hold a finite weight).
  """
  g = jax.random.gumbel(key, buf.log_w.shape, buf.log_w.dtype)
  _, idx = jax.lax.top_k(buf.log_w + g, n)
  return idx, jnp.isfinite(buf.log_w[idx])


def buffer_adjust(buf: ReplayBuffer, idx: Array, log_q_new: Array) -> ReplayBuffer:
  """Re-weights slots ``idx`` (distinct) to the new flow: log w += log q_old − log q_new."""
  old_w = buf.log_w[idx]
  new_w = old_w + buf.log_q[idx] - log_q_new
  new_w = jnp.where(jnp.isfinite(new_w) & jnp.isfinite(old_w), new_w, -jnp.inf)
  return buf._replace(log_w=buf.log_w.at[idx].set(new_w),
                      log_q=buf.log_q.at[idx].set(jnp.where(jnp.isfinite(log_q_new),
                                                            log_q_new, 0.0)))
