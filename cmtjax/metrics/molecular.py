"""Molecular metrics: Ramachandran histograms, energy and torus distances, chirality errors,
cis peptide bonds.

Host-side NumPy (float64) functions on batches of samples, vectorised over samples and
backbone pairs; :func:`molecular_figures` computes every molecular figure of CMT.md §7 at once.

Conventions:
  * positions ``x: [n, 3 * n_atoms]`` in nm (atom-major), energies in kJ/mol;
  * backbone angles ``phi_psi: [n, n_pairs, 2]`` (last axis (φ, ψ)) in radians on (-π, π]
    (``[n, 2]`` is accepted for a single pair); :func:`backbone_angles` computes them;
  * ``weights`` are non-negative importance weights of model samples (normalised here), e.g.
    :func:`cmtjax.metrics.normalised_weights` of log w = log p̃(x) - log q(x), both densities
    in Cartesian space.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax.numpy as jnp
import numpy as np

from cmtjax.metrics.evidence import reference_weight_figures
from cmtjax.metrics.weights import normalised_weights

if TYPE_CHECKING:
  from cmtjax.targets.molecules.topology import MolecularTopology

# cmtjax.targets.molecules.topology is imported inside the functions that need it: importing
# the molecules package pulls in the force field and OpenMM helpers, which `import cmtjax.metrics`
# should not pay for.

#: Probability floor of the model histogram in :func:`ramachandran_kl` (see there).
KL_FLOOR = 1e-10

_TWO_PI = 2.0 * np.pi


class EnergyDistance(NamedTuple):
  """Wasserstein distances between two 1-D energy distributions (kJ/mol)."""
  w1: float
  w2: float


def _checked_positions(x, top: MolecularTopology) -> np.ndarray:
  """``x`` as an array, after checking it is [n, 3 * n_atoms] for this molecule."""
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[1] != 3 * top.n_atoms:
    raise ValueError(f"x must be [n, {3 * top.n_atoms}] for {top.n_atoms} atoms, "
                     f"got shape {x.shape}")
  return x


def backbone_angles(x, top: MolecularTopology, chunk: int = 65536) -> np.ndarray:
  """The (φ, ψ) of every backbone pair of every configuration.

  Args:
    x: [n, 3 * n_atoms] positions in nm.
    top: the molecule's topology.
    chunk: configurations per call of :func:`dihedral_angles` (bounds memory).

  Returns:
    [n, n_pairs, 2] float64 angles in radians on (-π, π].
  """
  from cmtjax.sampling.chunks import map_in_chunks
  from cmtjax.targets.molecules.topology import (backbone_dihedral_pairs, dihedral_angles,
                                                 wrap_angle)

  x = _checked_positions(x, top)
  phi_idx, psi_idx = backbone_dihedral_pairs(top)
  idx = np.concatenate([phi_idx, psi_idx])  # [2 n_pairs, 4]
  n_pairs = phi_idx.shape[0]
  if x.shape[0] == 0:
    return np.empty((0, n_pairs, 2))
  a = map_in_chunks(lambda xb: dihedral_angles(jnp.asarray(xb), idx), x, chunk)
  return wrap_angle(a.astype(np.float64).reshape(-1, 2, n_pairs).transpose(0, 2, 1))


def _as_pairs(phi_psi) -> np.ndarray:
  """[n, 2] or [n, n_pairs, 2] -> [n, n_pairs, 2] float64."""
  a = np.asarray(phi_psi, np.float64)
  if a.ndim == 2 and a.shape[1] == 2:
    a = a[:, None, :]
  if a.ndim != 3 or a.shape[2] != 2:
    raise ValueError(f"angles must be [n, 2] or [n, n_pairs, 2], got shape {a.shape}")
  return a


def _weights(weights, n: int) -> np.ndarray:
  """Validated, normalised [n] weights (uniform when None)."""
  if weights is None:
    if n == 0:
      raise ValueError("no samples")
    return np.full(n, 1.0 / n)
  w = np.asarray(weights, np.float64)
  if w.shape != (n,):
    raise ValueError(f"weights must have shape ({n},), got {w.shape}")
  if not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError("weights must be finite and non-negative")
  total = w.sum()
  if total <= 0:
    raise ValueError("weights sum to zero")
  return w / total


def _bin_index(theta: np.ndarray, bins: int) -> np.ndarray:
  """Bin k of (-π, π] is (-π + k h, -π + (k+1) h], h = 2π / bins."""
  from cmtjax.targets.molecules.topology import wrap_angle

  k = np.ceil((wrap_angle(theta) + np.pi) / (_TWO_PI / bins)).astype(np.int64) - 1
  return np.clip(k, 0, bins - 1)


def ramachandran_histogram(phi, psi, weights=None, bins: int = 100) -> np.ndarray:
  """Normalised 2-D histogram of (φ, ψ) on (-π, π]², per backbone pair.

  Bins are half-open on the left, (-π + k h, -π + (k+1) h] with h = 2π / bins; angles are
  first wrapped onto (-π, π]. Row index is φ, column index ψ.

  Args:
    phi: [n] or [n, n_pairs] φ angles in radians.
    psi: same shape, ψ angles.
    weights: optional [n] non-negative sample weights (normalised here); uniform when None.
    bins: bins per axis.

  Returns:
    [bins, bins] (for 1-D input) or [n_pairs, bins, bins] probabilities, each summing to one.
  """
  phi = np.asarray(phi, np.float64)
  psi = np.asarray(psi, np.float64)
  if phi.shape != psi.shape or phi.ndim not in (1, 2):
    raise ValueError(f"phi and psi must both be [n] or [n, n_pairs], got {phi.shape}, "
                     f"{psi.shape}")
  single = phi.ndim == 1
  phi2 = phi[:, None] if single else phi
  psi2 = psi[:, None] if single else psi
  n, n_pairs = phi2.shape
  w = _weights(weights, n)
  flat = (np.arange(n_pairs)[None, :] * bins * bins
          + _bin_index(phi2, bins) * bins + _bin_index(psi2, bins))
  h = np.bincount(flat.ravel(), weights=np.repeat(w, n_pairs),
                  minlength=n_pairs * bins * bins).reshape(n_pairs, bins, bins)
  return h[0] if single else h


def _histograms(model_phi_psi, ref_phi_psi, model_weights, bins):
  m, r = _as_pairs(model_phi_psi), _as_pairs(ref_phi_psi)
  if m.shape[1] != r.shape[1]:
    raise ValueError(f"model has {m.shape[1]} backbone pairs, reference {r.shape[1]}")
  p = ramachandran_histogram(m[..., 0], m[..., 1], model_weights, bins)
  q = ramachandran_histogram(r[..., 0], r[..., 1], None, bins)
  return p, q


def ramachandran_tv(model_phi_psi, ref_phi_psi, model_weights=None, bins: int = 100) -> float:
  """Ramachandran TV: ½ Σ |P - Q| over the (φ, ψ) histogram, averaged over backbone pairs.

  Args:
    model_phi_psi: [n, n_pairs, 2] (or [n, 2]) model angles.
    ref_phi_psi: [m, n_pairs, 2] (or [m, 2]) reference angles.
    model_weights: optional [n] importance weights of the model samples (reweighted TV).
    bins: bins per axis.

  Returns:
    TV in [0, 1].
  """
  p, q = _histograms(model_phi_psi, ref_phi_psi, model_weights, bins)
  return float(np.mean(0.5 * np.abs(p - q).sum(axis=(1, 2))))


def ramachandran_kl(model_phi_psi, ref_phi_psi, model_weights=None, bins: int = 100,
                    floor: float = KL_FLOOR) -> float:
  """Ramachandran KL(ref ‖ model) over the (φ, ψ) histogram, averaged over backbone pairs.

  Empty model bins would make the KL infinite, so the model histogram P is floored and
  renormalised, P' = (P + floor) / (1 + bins² · floor), before Σ Q log(Q / P'); bins with no
  reference mass contribute 0. With the default floor 1e-10, a reference bin of mass Q that
  the model misses costs about Q · (23 + log Q), and identical histograms give < bins² · floor
  (1e-6 at 100 bins). The result is ≥ 0 (both are proper distributions).

  Args:
    model_phi_psi: [n, n_pairs, 2] (or [n, 2]) model angles.
    ref_phi_psi: [m, n_pairs, 2] (or [m, 2]) reference angles.
    model_weights: optional [n] importance weights of the model samples (reweighted KL).
    bins: bins per axis.
    floor: probability added to every model bin before renormalising.

  Returns:
    KL in nats.
  """
  p, q = _histograms(model_phi_psi, ref_phi_psi, model_weights, bins)
  p = (p + floor) / (1.0 + bins * bins * floor)
  terms = np.where(q > 0, q * (np.log(np.where(q > 0, q, 1.0)) - np.log(p)), 0.0)
  return float(np.mean(np.maximum(terms.sum(axis=(1, 2)), 0.0)))


RAMACHANDRAN_BINS = (100, 36)  # every report gives both binnings (CMT.md §7 uses 100)


def _pair_divergences(p: np.ndarray, q: np.ndarray, bins: int,
                      floor: float = KL_FLOOR) -> tuple[np.ndarray, np.ndarray]:
  """Per backbone pair: TV(P, Q) and KL(Q ‖ P') with P floored as in :func:`ramachandran_kl`."""
  tv = 0.5 * np.abs(p - q).sum(axis=(1, 2))
  p = (p + floor) / (1.0 + bins * bins * floor)
  terms = np.where(q > 0, q * (np.log(np.where(q > 0, q, 1.0)) - np.log(p)), 0.0)
  return tv, np.maximum(terms.sum(axis=(1, 2)), 0.0)


def split_halves(n: int, blocks=None) -> tuple[np.ndarray, np.ndarray]:
  """Two disjoint halves of ``n`` samples for a noise floor.

  With block labels (e.g. the independent walkers of a reference set, at least two of them),
  alternate blocks go to either half, so the halves are independent of each other; otherwise
  the first and the second half of the rows (independent for i.i.d. model samples, and the
  least correlated split of a time series).
  """
  if blocks is not None:
    blocks = np.asarray(blocks).ravel()
    labels = np.unique(blocks)
    if labels.size >= 2:
      first = np.isin(blocks, labels[0::2])
      return np.flatnonzero(first), np.flatnonzero(~first)
  return np.arange(n // 2), np.arange(n // 2, 2 * (n // 2))


def split_tv_spread(angles, blocks, bins: int = 36, n_splits: int = 200,
                    seed: int = 0) -> dict:
  """How the half-vs-half Ramachandran TV of a reference depends on which blocks go where.

  The floor of :func:`ramachandran_divergences` uses one split (alternate blocks). When a few
  walkers spend long stretches in a rare basin, that one figure depends on whether they land
  in the same half; the spread over random balanced splits of the blocks shows by how much.

  Args:
    angles: [m, n_pairs, 2] (φ, ψ) of the reference frames.
    blocks: [m] independent-block (walker) labels, at least 2 blocks.
    bins: bins per axis.
    n_splits: random splits (each: a random half of the blocks against the rest).
    seed: seed of the splits.

  Returns:
    ``{"median_per_pair", "p10_per_pair", "p90_per_pair"}`` (lists over backbone pairs),
    ``"median"`` (of the mean over pairs), ``"n_splits"``, ``"n_blocks"``.
  """
  a = _as_pairs(angles)
  blocks = np.asarray(blocks).ravel()
  labels, inverse = np.unique(blocks, return_inverse=True)
  if labels.size < 2 or blocks.shape[0] != a.shape[0]:
    raise ValueError(f"need [{a.shape[0]}] block labels with at least 2 blocks")
  idx = (_bin_index(a[..., 0], bins) * bins + _bin_index(a[..., 1], bins))  # [m, n_pairs]
  n_pairs = a.shape[1]
  counts = np.zeros((labels.size, n_pairs, bins * bins))
  for p in range(n_pairs):  # frame counts per block, pair and bin
    np.add.at(counts[:, p], (inverse, idx[:, p]), 1.0)
  rng = np.random.default_rng(seed)
  half = labels.size // 2
  tv = np.empty((n_splits, n_pairs))
  for k in range(n_splits):
    first = np.zeros(labels.size, bool)
    first[rng.permutation(labels.size)[:half]] = True
    ca, cb = counts[first].sum(0), counts[~first].sum(0)
    tv[k] = 0.5 * np.abs(ca / ca.sum(-1, keepdims=True) - cb / cb.sum(-1, keepdims=True)).sum(-1)
  return {"median_per_pair": np.median(tv, 0).tolist(),
          "p10_per_pair": np.percentile(tv, 10, 0).tolist(),
          "p90_per_pair": np.percentile(tv, 90, 0).tolist(),
          "median": float(np.median(tv.mean(1))), "n_splits": int(n_splits),
          "n_blocks": int(labels.size)}


def ramachandran_divergences(model_angles, ref_angles, model_weights=None, *,
                             ref_blocks=None, bins: int = 100) -> dict:
  """Ramachandran TV and KL(ref ‖ model) per backbone pair, with their noise floors.

  A histogram distance between two finite samples is not zero even when both come from the
  same distribution; the floors measure that part: the same statistic between two halves of
  the reference (``floor_reference``; halves from :func:`split_halves` over ``ref_blocks``)
  and between two halves of the model sample (``floor_model``, reweighted by each half's own
  normalised weights when ``model_weights`` are given). Halves hold half the samples, so the
  floors are somewhat above the noise of the full-size comparison (about √2 for TV): a figure
  at or below its floor says the samples cannot tell the model from the reference.

  Args:
    model_angles: [n, n_pairs, 2] model (φ, ψ).
    ref_angles: [m, n_pairs, 2] reference (φ, ψ).
    model_weights: optional [n] importance weights (reweighted figures).
    ref_blocks: optional [m] independent-block labels of the reference frames.
    bins: bins per axis.

  Returns:
    ``{"tv", "kl"}`` (means over pairs), ``{"tv_per_pair", "kl_per_pair"}`` (lists), and
    ``{"tv_floor_reference", "kl_floor_reference", "tv_floor_model", "kl_floor_model"}``
    (means over pairs), and the TV floors per pair (``tv_floor_reference_per_pair``,
    ``tv_floor_model_per_pair``).
  """
  m, r = _as_pairs(model_angles), _as_pairs(ref_angles)
  if m.shape[1] != r.shape[1]:
    raise ValueError(f"model has {m.shape[1]} backbone pairs, reference {r.shape[1]}")
  w = None if model_weights is None else _weights(model_weights, m.shape[0])

  def hist(a, weights=None):
    return ramachandran_histogram(a[..., 0], a[..., 1], weights, bins)

  tv, kl = _pair_divergences(hist(m, w), hist(r), bins)
  out = {"tv": float(tv.mean()), "kl": float(kl.mean()), "tv_per_pair": tv.tolist(),
         "kl_per_pair": kl.tolist()}
  ra, rb = split_halves(r.shape[0], ref_blocks)
  tv_r, kl_r = _pair_divergences(hist(r[ra]), hist(r[rb]), bins)
  ma, mb = split_halves(m.shape[0])
  wa = None if w is None else w[ma] / max(w[ma].sum(), 1e-300)
  wb = None if w is None else w[mb] / max(w[mb].sum(), 1e-300)
  tv_m, kl_m = _pair_divergences(hist(m[ma], wa), hist(m[mb], wb), bins)
  out.update(tv_floor_reference=float(tv_r.mean()), kl_floor_reference=float(kl_r.mean()),
             tv_floor_model=float(tv_m.mean()), kl_floor_model=float(kl_m.mean()),
             tv_floor_reference_per_pair=tv_r.tolist(), tv_floor_model_per_pair=tv_m.tolist())
  return out


def _quantile_pieces(values: np.ndarray, weights: np.ndarray):
  order = np.argsort(values, kind="stable")
  v = values[order]
  c = np.cumsum(weights[order])
  return v, c / c[-1]


def energy_distance(e_model, e_ref, weights=None) -> EnergyDistance:
  """Wasserstein-1 and -2 between two 1-D energy distributions, exactly.

  In 1-D, W_p^p = ∫_0^1 |F⁻¹(u) - G⁻¹(u)|^p du with F⁻¹, G⁻¹ the (weighted) empirical quantile
  functions; both are step functions, so the integral is a finite sum over the merged
  breakpoints of the two cumulative weight sequences. Non-finite energies are dropped (with
  their weights) before normalising.

  Args:
    e_model: [n] model energies (kJ/mol).
    e_ref: [m] reference energies (kJ/mol).
    weights: optional [n] importance weights of the model samples.

  Returns:
    ``EnergyDistance(w1, w2)`` in kJ/mol (NaN when one side has no finite energy or weight).
  """
  a = np.asarray(e_model, np.float64).ravel()
  b = np.asarray(e_ref, np.float64).ravel()
  wa = _weights(weights, a.shape[0]) if a.shape[0] else np.zeros(0)
  ka, kb = np.isfinite(a), np.isfinite(b)
  a, wa, b = a[ka], wa[ka], b[kb]
  if a.size == 0 or b.size == 0 or wa.sum() <= 0:
    return EnergyDistance(float("nan"), float("nan"))
  va, ca = _quantile_pieces(a, wa)
  vb, cb = _quantile_pieces(b, np.ones_like(b))
  u = np.unique(np.concatenate([[0.0], ca, cb, [1.0]]))
  u = u[(u >= 0.0) & (u <= 1.0)]
  mid, du = 0.5 * (u[1:] + u[:-1]), np.diff(u)
  qa = va[np.minimum(np.searchsorted(ca, mid, side="left"), va.size - 1)]
  qb = vb[np.minimum(np.searchsorted(cb, mid, side="left"), vb.size - 1)]
  d = np.abs(qa - qb)
  return EnergyDistance(float(np.sum(du * d)), float(np.sqrt(np.sum(du * d * d))))


def energy_above_reference(e_model, e_ref) -> dict:
  """The model's energies beyond the reference's highest one, and W1 without their tail.

  A few samples with exploded geometry (energies of 1e9 kJ/mol) decide the plain energy W1
  alone. Here every model energy above the highest finite reference energy, non-finite ones
  included, is capped at that energy: ``energy_w1_capped`` is the W1 of the capped energies
  against the reference (equal to ``energy_w1`` when no sample lies above, never larger), and
  ``energy_above_reference_fraction`` the share of model samples that were capped.

  Args:
    e_model: [n] model energies (kJ/mol).
    e_ref: [m] reference energies (kJ/mol).

  Returns:
    ``{"energy_w1_capped", "energy_above_reference_fraction"}`` (NaN without a finite
    reference energy or without model samples).
  """
  a = np.asarray(e_model, np.float64).ravel()
  b = np.asarray(e_ref, np.float64).ravel()
  b = b[np.isfinite(b)]
  nan = float("nan")
  if a.size == 0 or b.size == 0:
    return {"energy_w1_capped": nan, "energy_above_reference_fraction": nan}
  cap = float(b.max())
  above = ~(a <= cap)  # NaN and +inf count as above
  capped = np.where(above, cap, a)
  return {"energy_w1_capped": energy_distance(capped, b).w1,
          "energy_above_reference_fraction": float(above.mean())}


def torus_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Squared torus distances Σ_k min(|Δ_k|, 2π - |Δ_k|)² between [n, d] and [m, d] -> [n, m]."""
  d = np.abs(np.mod(a[:, None, :] - b[None, :, :], _TWO_PI))
  d = np.minimum(d, _TWO_PI - d)
  return np.sum(d * d, axis=-1)


def torus_w2(model_angles, ref_angles, weights=None, n: int = 1000, seed: int = 0) -> float:
  """W2 on the torus between model and reference (φ, ψ), averaged over backbone pairs.

  An estimate: ``k = min(n, n_model, n_ref)`` reference points are drawn without replacement,
  and k model points either without replacement (no weights) or by multinomial resampling
  with ``weights``; the exact optimal assignment between the two equal-size sets
  (``scipy.optimize.linear_sum_assignment`` on the squared torus distance
  Σ min(|Δ|, 2π - |Δ|)²) gives W2 of the two empirical measures. It is a noisy, upward-biased
  estimate of W2 of the distributions (two samples of one distribution are at distance > 0,
  shrinking with k); compare figures computed with the same ``n``. The same subsample indices
  are used for every backbone pair. Cost O(k³) per pair: k = 1000 takes ~0.1-0.5 s.

  Args:
    model_angles: [n_model, n_pairs, 2] (or [n_model, 2]) model angles (radians).
    ref_angles: [n_ref, n_pairs, 2] (or [n_ref, 2]) reference angles.
    weights: optional [n_model] importance weights of the model samples.
    n: subsample size k (at most).
    seed: seed of the subsampling.

  Returns:
    W2 in radians (NaN when a set is empty).
  """
  from scipy.optimize import linear_sum_assignment  # host-side only

  m, r = _as_pairs(model_angles), _as_pairs(ref_angles)
  if m.shape[1] != r.shape[1]:
    raise ValueError(f"model has {m.shape[1]} backbone pairs, reference {r.shape[1]}")
  k = min(int(n), m.shape[0], r.shape[0])
  if k == 0:
    return float("nan")
  rng = np.random.default_rng(seed)
  ref_idx = rng.choice(r.shape[0], size=k, replace=False)
  if weights is None:
    model_idx = rng.choice(m.shape[0], size=k, replace=False)
  else:
    model_idx = rng.choice(m.shape[0], size=k, replace=True, p=_weights(weights, m.shape[0]))
  values = []
  for j in range(m.shape[1]):  # loop over backbone pairs, not samples
    cost = torus_cost(m[model_idx, j], r[ref_idx, j])
    rows, cols = linear_sum_assignment(cost)
    values.append(np.sqrt(cost[rows, cols].mean()))
  return float(np.mean(values))


def cis_peptide_bonds(x, top: MolecularTopology, chunk: int = 65536) -> np.ndarray:
  """Which peptide bonds of every configuration are cis (|ω| < 90°).

  Args:
    x: [n, 3 * n_atoms] positions in nm.
    top: the molecule's topology (bonds from
      :func:`~cmtjax.targets.molecules.topology.peptide_bonds`).
    chunk: configurations per call.

  Returns:
    [n, n_bonds] bool.
  """
  from cmtjax.sampling.chunks import map_in_chunks
  from cmtjax.targets.molecules.topology import dihedral_angles, is_cis, peptide_bonds

  x = _checked_positions(x, top)
  idx = peptide_bonds(top)
  if x.shape[0] == 0 or idx.shape[0] == 0:
    return np.zeros((x.shape[0], idx.shape[0]), bool)
  omega = map_in_chunks(lambda xb: dihedral_angles(jnp.asarray(xb), idx), x, chunk)
  return is_cis(np.asarray(omega, np.float64))


def cis_peptide_shares(cis: np.ndarray, weights=None) -> tuple[float, list[float]]:
  """The share of configurations with a cis peptide bond, and the share per bond.

  Args:
    cis: [n, n_bonds] bool, :func:`cis_peptide_bonds`.
    weights: [n] non-negative weights (None: equal).

  Returns:
    ``(any bond, [per bond])``; NaN where there is no bond, no configuration or no weight.
  """
  n, n_bonds = cis.shape
  w = None if weights is None else np.asarray(weights, np.float64)
  if n == 0 or n_bonds == 0 or (w is not None and not w.sum() > 0):
    return float("nan"), [float("nan")] * n_bonds
  return (float(np.average(cis.any(axis=1), weights=w)),
          [float(np.average(cis[:, k], weights=w)) for k in range(n_bonds)])


def chirality_error_rate(x, centres: np.ndarray, reference_signs) -> float:
  """Fraction of configurations with at least one mirrored stereocentre.

  Args:
    x: [n, 3 * n_atoms] positions in nm.
    centres: [n_centres, 4] from :func:`chiral_centres`.
    reference_signs: [n_centres] :func:`chirality_signs` of a correct structure.

  Returns:
    Fraction in [0, 1] (NaN for n = 0).
  """
  from cmtjax.targets.molecules.topology import wrong_chirality

  wrong = np.asarray(wrong_chirality(jnp.asarray(x), centres, jnp.asarray(reference_signs)))
  return float(wrong.mean()) if wrong.size else float("nan")


def molecular_figures(
    x_model,
    log_w_model,
    e_model,
    x_ref,
    log_p_ref,
    log_q_ref,
    e_ref,
    top: MolecularTopology,
    *,
    reference_signs=None,
    ref_blocks=None,
    ref_angles_all=None,
    e_ref_all=None,
    forward_mask=None,
    bins: int = 100,
    torus_n: int = 1000,
    seed: int = 0,
) -> dict:
  """Every molecular figure of CMT.md §7 from model and reference samples (host side).

  Model samples with a wrong-handed stereocentre (an error mode of the flow, counted in
  ``chirality_error_rate``) are left out of the Ramachandran, energy and torus figures, and
  the importance weights are renormalised over the remaining samples. Plain figures use every
  remaining model sample (those with a finite energy for the energy figures); reweighted ones
  use w̄ = softmax(log w) over them, which gives weight 0 to non-finite log w.

  Reference points with log q = -inf lie outside the flow's support: they are counted in
  ``n_ref_outside_support`` and left out of ``eubo``, ``nll``, ``forward_ess`` and
  ``log_z_forward`` (like every other non-finite reference log weight; their total is
  ``n_ref_nonfinite``). With such points the true EUBO and NLL are +inf and the true forward
  ESS is 0, so the figures over the finite points are optimistic; report them with the count.

  Args:
    x_model: [n, 3 N] model samples (nm).
    log_w_model: [n] log p̃(x) - log q(x) of the model samples (may hold -inf / NaN).
    e_model: [n] model energies (kJ/mol; non-finite ones are dropped from energy figures).
    x_ref: [m, 3 N] reference samples (nm), e.g. from MD.
    log_p_ref: [m] log p̃(x_ref) (same unnormalised target as in ``log_w_model``).
    log_q_ref: [m] log q(x_ref) (may be -inf outside the flow's support).
    e_ref: [m] reference energies (kJ/mol).
    top: the molecule's topology.
    reference_signs: [n_centres] correct chirality signs; by default the majority sign of
      each stereocentre over ``x_ref``.
    ref_blocks: independent-block (walker) labels of the reference frames the Ramachandran
      figures use ([m], or [M] with ``ref_angles_all``), for the reference halves of the
      noise floors.
    ref_angles_all: [M, n_pairs, 2] backbone angles of every frame of a compact reference
      (``x_ref`` then holds a decorrelated subset): the Ramachandran and torus figures use
      them instead of the angles of ``x_ref``.
    e_ref_all: [M] energies of every frame of a compact reference, for the energy figures.
    forward_mask: [m] bool, the reference samples the forward figures use (default all), e.g.
      the frames a forward-KL flow did not train on.
    bins: Ramachandran histogram bins per axis of the headline figures; every Ramachandran
      figure is also given on 36×36 bins (suffix ``_36``).
    torus_n: subsample size of :func:`torus_w2`.
    seed: seed of the torus subsampling.

  Returns:
    A flat dict: floats ``eubo``, ``nll``, ``forward_ess``, ``log_z_forward``,
    ``ramachandran_tv[_reweighted]``, ``ramachandran_kl[_reweighted]``, the same on 36×36
    bins (``ramachandran_tv_36`` ...), each with ``_per_pair`` lists and the noise floors of
    :func:`ramachandran_divergences` (``ramachandran_tv_floor_reference``,
    ``ramachandran_tv_floor_model``, ``ramachandran_tv_reweighted_floor_model``, ``..._36``),
    ``energy_w1[_reweighted]``, ``energy_w2[_reweighted]``, ``energy_w1_capped`` and
    ``energy_above_reference_fraction`` (:func:`energy_above_reference`),
    ``torus_w2[_reweighted]``,
    ``chirality_error_rate``, ``cis_peptide_fraction`` (configurations with a cis peptide
    bond, :func:`cis_peptide_shares`), ``cis_peptide_fraction_reweighted`` and
    ``cis_peptide_fraction_reference`` (of the reference samples ``x_ref``), each with a
    ``_per_bond`` list; int counts ``n_ref_cis_peptide``, ``n_wrong_chirality``,
    ``n_ref_outside_support``,
    ``n_ref_nonfinite``, ``n_model_nonfinite_log_w``, ``n_model``, ``n_ref``,
    ``n_ref_forward`` (the reference samples of the forward figures). Figures that
    cannot be computed (no sample left) are NaN.
  """
  from cmtjax.targets.molecules.topology import (chiral_centres, chirality_signs,
                                                 wrong_chirality)

  dim = 3 * top.n_atoms
  x_model = np.asarray(x_model)
  x_ref = np.asarray(x_ref)
  n, m = x_model.shape[0], x_ref.shape[0]
  log_w_model = np.asarray(log_w_model, np.float64).ravel()
  e_model = np.asarray(e_model, np.float64).ravel()
  log_p_ref = np.asarray(log_p_ref, np.float64).ravel()
  log_q_ref = np.asarray(log_q_ref, np.float64).ravel()
  e_ref = np.asarray(e_ref, np.float64).ravel()
  if x_model.shape != (n, dim) or x_ref.shape != (m, dim):
    raise ValueError(f"x_model and x_ref must be [*, {dim}], got {x_model.shape}, "
                     f"{x_ref.shape}")
  if log_w_model.shape != (n,) or e_model.shape != (n,):
    raise ValueError(f"log_w_model and e_model must be [{n}], got {log_w_model.shape}, "
                     f"{e_model.shape}")
  if log_p_ref.shape != (m,) or log_q_ref.shape != (m,) or e_ref.shape != (m,):
    raise ValueError(f"log_p_ref, log_q_ref and e_ref must be [{m}]")

  # Forward figures (reference samples).
  fwd = np.ones(m, bool) if forward_mask is None else np.asarray(forward_mask, bool).ravel()
  if fwd.shape != (m,) or not fwd.any():
    raise ValueError(f"forward_mask must be [{m}] bool with at least one True")
  log_q_fwd = log_q_ref[fwd]
  log_w_ref = log_p_ref[fwd] - log_q_fwd
  finite_q = np.isfinite(log_q_fwd)
  fig: dict = {
      **{k: float(v) for k, v in reference_weight_figures(jnp.asarray(log_w_ref)).items()},
      "nll": float(-log_q_fwd[finite_q].mean()) if finite_q.any() else float("nan"),
      "n_ref_outside_support": int(np.sum(log_q_fwd == -np.inf)),
      "n_ref_nonfinite": int(np.sum(~np.isfinite(log_w_ref))),
      "n_model": n,
      "n_ref": m,
      "n_ref_forward": int(fwd.sum()),
      "n_model_nonfinite_log_w": int(np.sum(~np.isfinite(log_w_model))),
  }

  # Chirality.
  centres = chiral_centres(top)
  if reference_signs is None:
    if centres.shape[0] and m:
      reference_signs = np.sign(np.sum(np.asarray(chirality_signs(x_ref, centres)), axis=0))
    else:
      reference_signs = np.ones(centres.shape[0])
  wrong = (np.asarray(wrong_chirality(jnp.asarray(x_model), centres,
                                      jnp.asarray(reference_signs)))
           if n else np.zeros(0, bool))
  fig["n_wrong_chirality"] = int(wrong.sum())
  fig["chirality_error_rate"] = float(wrong.mean()) if n else float("nan")

  keep = ~wrong
  nan = float("nan")
  lw_kept = log_w_model[keep]
  w_bar = np.asarray(normalised_weights(jnp.asarray(lw_kept)), np.float64)
  has_w = lw_kept.size > 0 and w_bar.sum() > 0
  ref_angles = (backbone_angles(x_ref, top) if ref_angles_all is None
                else np.asarray(ref_angles_all, np.float64))
  if e_ref_all is not None:
    e_ref = np.asarray(e_ref_all, np.float64).ravel()
  model_angles = backbone_angles(x_model[keep], top)
  finite_a = np.all(np.isfinite(model_angles), axis=(1, 2))
  can_rama = finite_a.any() and ref_angles.shape[0] > 0 and ref_angles.shape[1] > 0
  w_a = w_bar[finite_a] if has_w and w_bar[finite_a].sum() > 0 else None
  for b in dict.fromkeys((bins, *RAMACHANDRAN_BINS)):
    sfx = "" if b == bins else f"_{b}"
    for kind, weights in (("", None), ("_reweighted", w_a)):
      ok = can_rama and (kind == "" or weights is not None)
      d = (ramachandran_divergences(model_angles[finite_a], ref_angles, weights,
                                    ref_blocks=ref_blocks, bins=b) if ok else {})
      for stat in ("tv", "kl"):
        name = f"ramachandran_{stat}{kind}{sfx}"
        fig[name] = d.get(stat, nan)
        fig[f"{name}_per_pair"] = d.get(f"{stat}_per_pair", [])
        fig[f"{name}_floor_model"] = d.get(f"{stat}_floor_model", nan)
        if kind == "":
          fig[f"ramachandran_{stat}{sfx}_floor_reference"] = d.get(f"{stat}_floor_reference", nan)
        if stat == "tv":  # the floors per residue pair, beside tv_per_pair
          fig[f"{name}_floor_model_per_pair"] = d.get("tv_floor_model_per_pair", [])
          if kind == "":
            fig[f"ramachandran_tv{sfx}_floor_reference_per_pair"] = d.get(
                "tv_floor_reference_per_pair", [])

  # Peptide bonds: the share of configurations with a cis bond (any; and per bond), a rare
  # isomer that a flow can miss while every backbone figure looks right.
  cis_model = cis_peptide_bonds(x_model[keep], top)
  cis_ref = cis_peptide_bonds(x_ref, top)
  for sfx, c, w in (("", cis_model, None),
                    ("_reweighted", cis_model, w_bar if has_w else np.zeros(len(cis_model))),
                    ("_reference", cis_ref, None)):
    fig[f"cis_peptide_fraction{sfx}"], fig[f"cis_peptide_fraction{sfx}_per_bond"] = (
        cis_peptide_shares(c, w))
  fig["n_ref_cis_peptide"] = int(cis_ref.any(axis=1).sum())

  plain = energy_distance(e_model[keep], e_ref)
  rew = energy_distance(e_model[keep], e_ref, w_bar) if has_w else EnergyDistance(nan, nan)
  fig.update(energy_w1=plain.w1, energy_w2=plain.w2,
             energy_w1_reweighted=rew.w1, energy_w2_reweighted=rew.w2,
             **energy_above_reference(e_model[keep], e_ref))

  fig["torus_w2"] = (torus_w2(model_angles[finite_a], ref_angles, None, torus_n, seed)
                     if can_rama else nan)
  fig["torus_w2_reweighted"] = (
      torus_w2(model_angles[finite_a], ref_angles, w_a, torus_n, seed)
      if can_rama and w_a is not None else nan)
  return fig
