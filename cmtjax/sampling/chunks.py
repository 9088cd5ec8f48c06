"""Drawing and mapping large batches in chunks on the host, so that memory stays bounded and
every chunk has the same shape (one compilation)."""

from __future__ import annotations

from typing import Callable, Iterator

import jax
import numpy as np

Array = jax.Array


def chunk_sizes(n: int, chunk: int) -> tuple[int, int]:
  """``(number of chunks, equal chunk size)`` covering n rows with chunks of at most
  ``chunk`` (the last chunk may run past n)."""
  if n < 1 or chunk < 1:
    raise ValueError(f"need n >= 1 and chunk >= 1, got n={n}, chunk={chunk}")
  n_chunks = -(-n // chunk)
  return n_chunks, -(-n // n_chunks)


def draw_in_chunks(draw: Callable[[Array, int], tuple[Array, Array]], key: Array, n: int,
                   chunk: int) -> Iterator[tuple[Array, Array]]:
  """Yields ``draw(k, size)`` for equal-size chunks that together hold exactly n samples.

  Chunk i uses ``jax.random.split(key, n_chunks)[i]``; the last chunk is cut so the total is
  n (it is drawn at the common size, so the same compiled sampler serves every chunk).

  Args:
    draw: ``(key, m) -> (x: [m, dim], log_q: [m])``.
    key: PRNG key.
    n: samples in all.
    chunk: most samples per call.
  """
  n_chunks, size = chunk_sizes(n, chunk)
  left = n
  for k in jax.random.split(key, n_chunks):
    x, log_q = draw(k, size)
    m = min(size, left)
    left -= m
    yield (x, log_q) if m == size else (x[:m], log_q[:m])


def map_in_chunks(fn: Callable[[Array], Array], x, chunk: int) -> np.ndarray:
  """``fn`` applied to consecutive row blocks of at most ``chunk`` rows of ``x``, concatenated
  (a NumPy array; an empty ``x`` gives ``fn`` of it)."""
  if len(x) == 0:
    return np.asarray(fn(x))
  return np.concatenate([np.asarray(fn(x[i:i + chunk])) for i in range(0, len(x), chunk)])
