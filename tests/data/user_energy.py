"""A user's own energy, as a new user would write it: a 6-D target for cmtjax.

  cmtjax train --target tests/data/user_energy.py:two_wells --out runs/two_wells

Two Gaussian wells at x_0 = ±3 (unit variance in every direction), equal weights, normalised
(log Z = 0). ``bad_shape`` and ``all_nan`` are the mistakes cmtjax must catch.
"""

import jax.numpy as jnp
from jax.scipy.special import logsumexp

import cmtjax

DIM = 6


def _log_prob(x, separation):
  centres = jnp.zeros((2, DIM)).at[:, 0].set(jnp.array([-separation, separation]))
  d2 = jnp.sum((x[:, None, :] - centres[None]) ** 2, axis=-1)        # [batch, 2]
  log_norm = -0.5 * DIM * jnp.log(2 * jnp.pi) + jnp.log(0.5)
  return logsumexp(-0.5 * d2, axis=-1) + log_norm                      # [batch]


def two_wells(separation: float = 3.0) -> cmtjax.Target:
  return cmtjax.Target(name="two_wells", dim=DIM, log_Z=0.0,
                       log_prob=lambda x: _log_prob(x, separation))


def bad_shape() -> cmtjax.Target:
  """log_prob returns [batch, 1] instead of [batch]."""
  return cmtjax.Target(name="bad_shape", dim=DIM, log_prob=lambda x: _log_prob(x, 3.0)[:, None])


def all_nan() -> cmtjax.Target:
  """log_prob is NaN everywhere."""
  return cmtjax.Target(name="all_nan", dim=DIM, log_prob=lambda x: jnp.full(x.shape[:1], jnp.nan))
