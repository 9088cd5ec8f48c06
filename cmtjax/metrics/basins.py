"""Alanine-dipeptide Ramachandran basin populations, plain, weighted and with block errors.

Host-side NumPy on backbone angles (phi, psi) in radians on (-pi, pi]; the basins are disjoint
and cover the plane (see ``aldp_basin_populations`` for the bounds). Used to compare model
samples, reweighted model samples and reference sets of alanine dipeptide.
"""

from __future__ import annotations

import numpy as np

_DEG = np.pi / 180.0
ALDP_BASINS = ("beta_C5", "C7eq_PII", "alphaR", "phi_neg_other", "phi_pos")


def _aldp_basin_masks(phi, psi) -> dict:
  """Disjoint masks of the basins: phi < 0 split by psi, and phi >= 0 (alpha_L and C7ax)."""
  phi, psi = np.asarray(phi), np.asarray(psi)
  neg = phi < 0
  beta = neg & ((psi > 120 * _DEG) | (psi < -150 * _DEG))
  c7eq = neg & (psi > 50 * _DEG) & (psi <= 120 * _DEG)
  alpha_r = neg & (psi > -120 * _DEG) & (psi <= 50 * _DEG)
  other = neg & ~(beta | c7eq | alpha_r)
  return {"beta_C5": beta, "C7eq_PII": c7eq, "alphaR": alpha_r, "phi_neg_other": other,
          "phi_pos": ~neg}


def aldp_basin_populations(phi, psi, weights=None) -> dict:
  """Fractions of alanine-dipeptide configurations in the Ramachandran basins.

  Basins (phi, psi in radians on (-pi, pi]; the bounds below in degrees), disjoint and
  exhaustive:
    beta_C5:       phi < 0, psi > 120 or psi < -150
    C7eq_PII:      phi < 0, 50 < psi <= 120
    alphaR:        phi < 0, -120 < psi <= 50
    phi_neg_other: phi < 0, -150 <= psi <= -120 (the sparse bridge between alphaR and beta)
    phi_pos:       phi >= 0 (alpha_L and C7ax)

  Args:
    phi: [n] backbone phi (C-N-CA-C) in radians.
    psi: [n] backbone psi (N-CA-C-N) in radians.
    weights: optional [n] non-negative importance weights (normalised here).

  Returns:
    dict basin -> fraction (the fractions sum to one).
  """
  phi, psi = np.asarray(phi).reshape(-1), np.asarray(psi).reshape(-1)
  if phi.shape != psi.shape:
    raise ValueError(f"phi and psi differ in shape: {phi.shape} vs {psi.shape}")
  w = np.ones_like(phi, dtype=np.float64) if weights is None else np.asarray(
    weights, np.float64).reshape(-1)
  if w.shape != phi.shape or np.any(w < 0) or not np.sum(w) > 0:
    raise ValueError("weights must be [n], non-negative, with a positive sum")
  w = w / np.sum(w)
  return {k: float(np.sum(w[m])) for k, m in _aldp_basin_masks(phi, psi).items()}


def aldp_basin_populations_by_block(phi, psi, blocks) -> dict:
  """Basin fractions with standard errors from independent blocks (e.g. walkers).

  Args:
    phi: [n] radians.
    psi: [n] radians.
    blocks: [n] int block label of each configuration (>= 2 blocks).

  Returns:
    dict basin -> {"mean": pooled fraction, "stderr": std of the block fractions (ddof 1) /
    sqrt(n_blocks), "n_blocks": n_blocks}.
  """
  blocks = np.asarray(blocks).reshape(-1)
  labels = np.unique(blocks)
  if labels.size < 2:
    raise ValueError("need at least two blocks for an error bar")
  pooled = aldp_basin_populations(phi, psi)
  per_block = [aldp_basin_populations(np.asarray(phi).reshape(-1)[blocks == b],
                                      np.asarray(psi).reshape(-1)[blocks == b]) for b in labels]
  out = {}
  for k in pooled:
    vals = np.array([p[k] for p in per_block])
    out[k] = {"mean": pooled[k], "stderr": float(vals.std(ddof=1) / np.sqrt(labels.size)),
              "n_blocks": int(labels.size)}
  return out
