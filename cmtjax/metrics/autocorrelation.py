"""Integrated autocorrelation times and effective sample sizes of correlated samples (MD
trajectories, e.g. the replica-exchange reference sets).

For a stationary series with normalised autocorrelation ρ(t), the integrated autocorrelation
time is τ = 1 + 2 Σ_{t≥1} ρ(t) (in frames): n correlated frames carry about n / τ independent
samples. The sum is cut at Sokal's self-consistent window, the smallest M with M ≥ c τ(M)
(c = 5), which keeps the noise of the tail of ρ out of the estimate. Independent blocks (the
walkers of a replica-exchange run) are pooled by averaging their autocorrelation functions.
Angles (backbone dihedrals) are periodic, so their (cos, sin) components are used and the
slower of the two counts.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

SOKAL_C = 5.0


def autocorrelation(x: np.ndarray) -> np.ndarray:
  """Normalised autocorrelation ρ(t), t = 0 .. n-1, of a 1-D series (FFT, biased estimator)."""
  x = np.asarray(x, np.float64).ravel()
  n = x.size
  x = x - x.mean()
  f = np.fft.rfft(x, 2 * n)
  acf = np.fft.irfft(f * np.conj(f))[:n]
  return acf / acf[0] if acf[0] > 0 else np.concatenate([[1.0], np.zeros(n - 1)])


def integrated_time_from_acf(rho: np.ndarray, c: float = SOKAL_C) -> float:
  """τ = 1 + 2 Σ_{1≤t≤M} ρ(t) at Sokal's window M (the smallest M ≥ c τ(M)); at least 1."""
  taus = 2.0 * np.cumsum(rho) - 1.0
  ok = np.arange(rho.size) >= c * taus
  m = int(np.argmax(ok)) if ok.any() else rho.size - 1
  return float(max(taus[m], 1.0))


def _blocks(n: int, blocks: Optional[np.ndarray]) -> list[np.ndarray]:
  if blocks is None:
    return [np.arange(n)]
  blocks = np.asarray(blocks).ravel()
  return [np.flatnonzero(blocks == b) for b in np.unique(blocks)]


def integrated_autocorrelation_time(x: np.ndarray, blocks: Optional[np.ndarray] = None,
                                    c: float = SOKAL_C) -> float:
  """τ (in frames) of a series made of independent, time-ordered blocks (default: one block).

  The autocorrelation functions of the blocks (truncated to the shortest) are averaged before
  the windowed sum.
  """
  x = np.asarray(x, np.float64).ravel()
  rows = _blocks(x.size, blocks)
  length = min(r.size for r in rows)
  if length < 4:
    raise ValueError(f"need at least 4 frames per block, got {length}")
  rho = np.mean([autocorrelation(x[r])[:length] for r in rows], axis=0)
  return integrated_time_from_acf(rho, c)


def dihedral_decorrelation(angles: np.ndarray, blocks: Optional[np.ndarray] = None,
                           names: Optional[list[str]] = None,
                           frame_ps: Optional[float] = None) -> dict:
  """Autocorrelation times of dihedral angles and the effective number of samples.

  Args:
    angles: [n_frames, n_dihedrals] radians, each block's frames in time order.
    blocks: [n_frames] independent-block (walker) labels; None: one block.
    names: a name per dihedral (default ``d0``, ``d1``, ...).
    frame_ps: time between frames in ps (adds ``tau_ps``).

  Returns:
    ``tau_frames`` {name: τ} (the slower of cos and sin), ``tau_max_frames``, ``slowest``
    (its name), ``effective_samples`` = n_frames / τ_max, ``n_frames``, ``n_blocks``, and with
    ``frame_ps`` ``tau_ps`` {name: τ · frame_ps} and ``tau_max_ps``.
  """
  angles = np.asarray(angles, np.float64)
  if angles.ndim != 2:
    raise ValueError(f"angles must be [n_frames, n_dihedrals], got {angles.shape}")
  n, k = angles.shape
  names = names or [f"d{i}" for i in range(k)]
  tau = {}
  for i, name in enumerate(names):
    tau[name] = max(integrated_autocorrelation_time(np.cos(angles[:, i]), blocks),
                    integrated_autocorrelation_time(np.sin(angles[:, i]), blocks))
  slowest = max(tau, key=tau.get)
  out = {"tau_frames": tau, "tau_max_frames": tau[slowest], "slowest": slowest,
         "effective_samples": float(n / tau[slowest]), "n_frames": int(n),
         "n_blocks": len(_blocks(n, blocks))}
  if frame_ps is not None:
    out["tau_ps"] = {k_: v * frame_ps for k_, v in tau.items()}
    out["tau_max_ps"] = tau[slowest] * frame_ps
  return out
