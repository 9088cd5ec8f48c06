"""What a CMT step logs about itself beyond the dual: the realised step and the modes.

Both are computed on the step's own buffer, so they cost no target evaluations.

  * :func:`fit_diagnostics`: how far the fitted flow q̂_{i+1} actually moved from q̂_i and
    how close it came to the requested q_{i+1}, by self-normalised importance sampling on
    (a uniform subsample of) the buffer: one flow density evaluation per entry;
  * :func:`mode_diagnostics`: for targets with known modes, how many modes the buffer (q̂_i)
    and its weights (q_{i+1}) cover, and how many samples the sparsest mode holds;
  * :func:`basin_diagnostics`: for molecules, the share of the buffer (q̂_i) and of its
    weights (q_{i+1}) with backbone φ > 0, per residue, and with a cis peptide bond, per
    bond: the sparse states an annealing run can lose on the way (φ > 0 about 2–3 % of
    alanine at 300 K, a cis bond 1e-4 to 1e-3).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.cmt.dual import Buffer
from cmtjax.metrics.modes import mode_occupancy, modes_covered

Array = jax.Array


class FitDiagnostics(NamedTuple):
  """The step the fit realised (scalars).

  Attributes:
    realised_kl: KL(q̂_{i+1} ‖ q̂_i), requested: ``kl`` of the dual.
    realised_entropy_drop: H(q̂_i) − H(q̂_{i+1}), requested: ``entropy_drop`` of the dual.
      Both entropies are estimated on the same entries (H(q̂_i) as −mean log q̂_i, H(q̂_{i+1})
      with the weights q̂_{i+1}/q̂_i), so it is one estimator of one quantity.
    fit_kl: KL(q_{i+1} ‖ q̂_{i+1}), what the fit left of the requested move.
    realised_ess: effective sample size fraction of the weights q̂_{i+1}/q̂_i behind the first
      two: near 1/entries the ratio is heavy-tailed and both estimates are unreliable (the
      KL then reads about log(entries), whatever the true value).
  """

  realised_kl: Array
  realised_entropy_drop: Array
  fit_kl: Array
  realised_ess: Array


def fit_diagnostics(log_prob: Callable[[Any, Array], Array], params: Any, buffer: Buffer,
                    log_wbar: Array, n_entries: int) -> FitDiagnostics:
  """:class:`FitDiagnostics` on the buffer's first ``n_entries`` rows (static).

  Args:
    log_prob: ``(params, x) -> log q̂(x)``.
    params: the fitted flow q̂_{i+1}.
    buffer: the step's buffer (samples of q̂_i); the first ``n_entries`` rows must be draws
      (not padding), a uniform subsample since the buffer is i.i.d.
    log_wbar: ``[N]`` normalised log weights of q_{i+1} on the whole buffer.
    n_entries: rows used.
  """
  m = int(n_entries)
  valid, x, log_q_old = buffer.valid[:m], buffer.x[:m], buffer.log_q[:m]
  dtype = log_q_old.dtype
  n_valid = jnp.maximum(jnp.sum(valid), 1).astype(dtype)
  log_q_new = jnp.where(valid, log_prob(params, x), -jnp.inf)
  log_q_new = jnp.where(jnp.isfinite(log_q_new), log_q_new, -jnp.inf)
  # Self-normalised weights of q̂_{i+1} relative to q̂_i.
  log_rho = jnp.where(valid, log_q_new - log_q_old, -jnp.inf)
  log_rho_bar = log_rho - jax.scipy.special.logsumexp(log_rho)
  rho_bar = jnp.exp(log_rho_bar)
  ok = rho_bar > 0
  realised_kl = jnp.sum(jnp.where(ok, rho_bar * (log_rho_bar + jnp.log(n_valid)), 0.0))
  entropy_new = -jnp.sum(jnp.where(ok, rho_bar * log_q_new, 0.0))
  entropy_old = -jnp.sum(jnp.where(valid, log_q_old, 0.0)) / n_valid
  # log q_{i+1} on the entries (w̄ is normalised over the whole buffer), and w̄ renormalised
  # over the entries used.
  n_all = jnp.maximum(buffer.n_valid, 1).astype(dtype)
  log_q_next = log_q_old + log_wbar[:m] + jnp.log(n_all)
  wbar = jnp.exp(log_wbar[:m] - jax.scipy.special.logsumexp(log_wbar[:m]))
  fit_kl = jnp.sum(jnp.where(wbar > 0, wbar * (log_q_next - log_q_new), 0.0))
  realised_ess = 1.0 / (n_valid * jnp.maximum(jnp.sum(rho_bar * rho_bar), 1e-30))
  return FitDiagnostics(realised_kl=realised_kl,
                        realised_entropy_drop=entropy_old - entropy_new, fit_kl=fit_kl,
                        realised_ess=realised_ess)


class ModeDiagnostics(NamedTuple):
  """Mode coverage of a step (int32 scalars; −1 for targets without known modes).

  Attributes:
    modes_buffer: modes holding at least a quarter of their true share of the buffer (q̂_i).
    modes_weighted: the same under the weights w̄ (q_{i+1}).
    sparsest_mode_samples: buffer samples nearest to the least-sampled mode (a mode at 0
      gets no weight in the fit and is lost).
  """

  modes_buffer: Array
  modes_weighted: Array
  sparsest_mode_samples: Array


def mode_diagnostics(target, buffer: Buffer, log_wbar: Array) -> ModeDiagnostics:
  """:class:`ModeDiagnostics` of the buffer (padding and invalid rows never count)."""
  if target.assign_modes is None or target.mode_weights is None:
    none = jnp.array(-1, jnp.int32)
    return ModeDiagnostics(modes_buffer=none, modes_weighted=none, sparsest_mode_samples=none)
  wbar = jnp.exp(log_wbar)
  n_modes = int(target.mode_weights.shape[0])
  idx = jnp.where(buffer.valid, target.assign_modes(buffer.x), -1)
  true_w = jnp.asarray(target.mode_weights, wbar.dtype)
  occ_buffer = mode_occupancy(idx, n_modes, buffer.valid.astype(wbar.dtype))
  return ModeDiagnostics(
      modes_buffer=modes_covered(occ_buffer, true_w),
      modes_weighted=modes_covered(mode_occupancy(idx, n_modes, wbar), true_w),
      sparsest_mode_samples=jnp.round(jnp.min(occ_buffer) * buffer.n_valid).astype(jnp.int32))


class BasinDiagnostics(NamedTuple):
  """The sparse states of a molecule in a step: the φ > 0 basin of each backbone residue
  ([n_pairs] arrays) and the cis isomer of each peptide bond ([n_bonds] arrays); [0] arrays
  for targets that are not molecules.

  Attributes:
    phi_pos_buffer: share of the buffer's samples (q̂_i) with φ ≥ 0, per residue.
    phi_pos_weighted: the same under the weights w̄ (q_{i+1}, what the fit is asked for).
    cis_buffer: share of the buffer's samples with the peptide bond cis (|ω| < 90°,
      :func:`~cmtjax.targets.molecules.topology.is_cis`), per bond (``peptide_bonds``
      order). Times the buffer size it is the number of cis samples the fit sees: at 0 the
      isomer is lost.
    cis_weighted: the same under the weights w̄.
  """

  phi_pos_buffer: Array
  phi_pos_weighted: Array
  cis_buffer: Array
  cis_weighted: Array


def basin_diagnostics(target, buffer: Buffer, log_wbar: Array) -> BasinDiagnostics:
  """:class:`BasinDiagnostics` of the buffer (padding and invalid rows never count)."""
  from cmtjax.targets.molecules.topology import dihedral_angles, is_cis, peptide_bonds
  mol = target.molecule
  empty = jnp.zeros((0,), log_wbar.dtype)
  if mol is None:
    return BasinDiagnostics(empty, empty, empty, empty)
  valid = buffer.valid[:, None]
  n_valid = jnp.maximum(jnp.sum(buffer.valid), 1).astype(log_wbar.dtype)
  wbar = jnp.where(buffer.valid, jnp.exp(log_wbar), 0.0)
  w_sum = jnp.maximum(jnp.sum(wbar), 1e-30)

  def shares(indicator):  # [N, k] booleans -> (buffer share, weighted share), [k] each
    hit = (indicator & valid).astype(log_wbar.dtype)
    return jnp.sum(hit, axis=0) / n_valid, wbar @ hit / w_sum

  phi_idx, bonds = np.asarray(mol.phi_idx), peptide_bonds(mol.topology)
  phi_b, phi_w = (shares(dihedral_angles(buffer.x, phi_idx) >= 0) if phi_idx.shape[0]
                  else (empty, empty))
  cis_b, cis_w = (shares(is_cis(dihedral_angles(buffer.x, bonds)))
                  if bonds.shape[0] else (empty, empty))
  return BasinDiagnostics(phi_pos_buffer=phi_b, phi_pos_weighted=phi_w, cis_buffer=cis_b,
                          cis_weighted=cis_w)
