"""Model samples people can use: positions with their log densities and importance weights.

``samples.npz`` (in every run folder; ``cmtjax sample --run DIR`` writes more) holds

  positions   [n, dim] float32 (float64 for a float64 run): samples x ~ q_θ (molecules:
              Cartesian, nm, atom-major)
  log_q       [n] log q_θ(x) of the flow
  log_p       [n] log p̃(x), the target's unnormalised log density
  log_w       [n] log importance weights log p̃(x) − log q_θ(x) (unnormalised; non-finite
              where the target is); self-normalised weights w = exp(log_w − max) / Σ reweight
              any observable: E_p[f] ≈ Σ w f(x) / Σ w
  energies    [n] potential energies in kJ/mol (molecules only)
  target      the target's name, ``dim``, ``kbt`` (molecules), ``format_version``

A particle method (``--method smc``) has no density: its ``samples.npz`` holds its final
weighted particles, ``log_q`` is NaN and ``log_w`` is the particles' own log weight
(:func:`particle_samples`).

Read it with :func:`load_samples` or plain ``numpy.load``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np

from cmtjax.sampling.chunks import draw_in_chunks, map_in_chunks

FORMAT_VERSION = 1
_ARRAYS = ("positions", "log_q", "log_p", "log_w")


def draw_samples(target, sample_fn: Callable, params, key: jax.Array, n: int, *,
                 chunk: int = 8192) -> dict[str, Any]:
  """Draws ``n`` samples of a flow with their log q, log p̃, log weights (and energies).

  Args:
    target: the ``Target``.
    sample_fn: ``(params, key, n) -> (x, log_q)``, e.g. ``jax.jit(flow.sample_and_log_prob,
      static_argnums=2)``.
    params: flow parameters.
    key: PRNG key.
    n: number of samples.
    chunk: samples drawn per call.

  Returns:
    A dict of the arrays of the module docstring plus ``target``, ``dim`` (and ``kbt``).
  """
  parts = list(draw_in_chunks(lambda k, m: sample_fn(params, k, m), key, int(n), chunk))
  x = np.concatenate([np.asarray(p[0]) for p in parts])
  log_q = np.concatenate([np.asarray(p[1], np.float64) for p in parts])
  return _samples_dict(target, x, log_q, None, chunk)


def _samples_dict(target, x, log_q, log_w, chunk: int) -> dict[str, Any]:
  """The samples.npz dict of positions ``x`` with their log q (log w: log p̃ − log q when
  None), log p̃ and, for molecules, energies."""
  x = np.asarray(x)
  if x.dtype != np.float64:
    x = x.astype(np.float32)
  log_p = np.asarray(map_in_chunks(target.log_prob, x, chunk), np.float64)
  out = {"positions": x, "log_q": log_q, "log_p": log_p,
         "log_w": log_p - log_q if log_w is None else np.asarray(log_w, np.float64),
         "target": target.name, "dim": target.dim}
  if target.molecule is not None:
    out["energies"] = np.asarray(map_in_chunks(target.molecule.energy, x, chunk), np.float64)
    out["kbt"] = float(target.molecule.kbt)
  return out


def particle_samples(target, x, log_w, *, chunk: int = 8192) -> dict[str, Any]:
  """The samples.npz dict of a weighted particle set (no density: ``log_q`` is NaN)."""
  return _samples_dict(target, x, np.full(len(x), np.nan), log_w, chunk)


def save_samples(path: str, samples: dict[str, Any]) -> str:
  """Writes :func:`draw_samples` output to ``path`` (.npz, compressed)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
  arrays = {k: np.asarray(samples[k]) for k in (*_ARRAYS, "energies") if k in samples}
  meta = {"target": np.str_(samples["target"]), "dim": np.int32(samples["dim"]),
          "format_version": np.int32(FORMAT_VERSION)}
  if "kbt" in samples:
    meta["kbt"] = np.float64(samples["kbt"])
  np.savez_compressed(path, **arrays, **meta)
  return path


def load_samples(path: str) -> dict[str, Any]:
  """Reads a ``samples.npz``.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a samples file, or one of another format version.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"samples file {path!r} does not exist")
  with np.load(path, allow_pickle=False) as f:
    missing = [k for k in (*_ARRAYS, "format_version") if k not in f.files]
    if missing:
      raise ValueError(f"{path}: not a cmtjax samples file (missing {missing})")
    version = int(f["format_version"])
    if version != FORMAT_VERSION:
      raise ValueError(f"{path}: samples format version {version}, this cmtjax reads "
                       f"{FORMAT_VERSION}")
    out = {k: np.asarray(f[k]) for k in f.files}
  out["target"] = str(out["target"])
  out["dim"] = int(out["dim"])
  return out


def self_normalised_weights(log_w: np.ndarray) -> np.ndarray:
  """Weights summing to one from ``log_w`` (non-finite log weights get weight 0)."""
  log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
  w = np.exp(log_w - np.max(log_w))
  return w / np.sum(w)
