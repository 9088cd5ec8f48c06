"""Host-side evaluation of a sampler against a target: every metric of cmtjax.metrics at once."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.metrics.ess import forward_ess, reverse_ess, reverse_ess_clipped
from cmtjax.metrics.evidence import elbo, eubo, log_z_forward, log_z_reverse
from cmtjax.metrics.modes import _weighted_fraction, mode_occupancy, mode_tv, modes_covered
from cmtjax.metrics.weights import count_nonfinite, normalized_weights
from cmtjax.targets.base import Target

Array = jax.Array
SampleAndLogProbFn = Callable[[Array, int], tuple[Array, Array]]


def _chunk_sizes(n: int, chunk: int) -> tuple[int, int]:
  """(number of chunks, equal chunk size) covering n with chunks of at most ``chunk``."""
  n_chunks = max(1, -(-n // chunk))
  return n_chunks, -(-n // n_chunks)


def _batched_stats(
    target: Target,
    draw: Callable[[Array, int], tuple[Array, Array]],
    key: Array,
    n: int,
    chunk: int,
) -> dict[str, np.ndarray]:
  """Draws n samples in equal chunks (one shape, one compilation) and keeps per-sample stats.

  Returns numpy arrays: ``log_w [n]``, ``log_q [n]``, and when available ``mode_idx [n]``
  and ``right [n, dim/2]`` (x1 in the right well) — never the samples themselves.
  """
  n_chunks, size = _chunk_sizes(n, chunk)
  log_p_fn = target.log_prob  # jittable by the Target protocol; synthetic ones are jitted
  assign = target.assign_modes if target.mode_weights is not None else None
  boundary = target.info.get("well_boundary")
  out: dict[str, list[np.ndarray]] = {"log_w": [], "log_q": [], "mode_idx": [], "right": []}
  for k in jax.random.split(key, n_chunks):
    x, log_q = draw(k, size)
    log_p = log_p_fn(x)
    out["log_w"].append(np.asarray(log_p - log_q))
    out["log_q"].append(np.asarray(log_q))
    if assign is not None:
      out["mode_idx"].append(np.asarray(assign(x)))
    if boundary is not None:
      out["right"].append(np.asarray(x[:, 0::2] > boundary))
  return {name: np.concatenate(v)[:n] for name, v in out.items() if v}


def evaluate(
    target: Target,
    sample_and_log_prob: SampleAndLogProbFn,
    key: Array,
    n_samples: int,
    *,
    log_prob_fn: Optional[Callable[[Array], Array]] = None,
    n_repeats: int = 5,
    chunk: int = 16384,
    clip_fraction: float = 1e-4,
    mode_threshold: float = 0.25,
) -> dict[str, Any]:
  """Evaluates a model q against ``target`` (host side, not jittable).

  Draws ``n_repeats`` independent batches of ``n_samples`` model samples, each in chunks of
  at most ``chunk`` samples (equal chunk sizes, so a jitted sampler compiles once; up to
  one chunk of extra samples is discarded).

  Args:
    target: the target (its ``log_prob`` must be jittable).
    sample_and_log_prob: ``(key, n) -> (x: [n, dim], log_q: [n])``, the model's sampler with
      log q(x) in the target's space.
    key: PRNG key.
    n_samples: samples per repeat.
    log_prob_fn: ``x: [n, dim] -> log_q: [n]``, the model density; needed (with
      ``target.sample``) for the forward metrics, which are skipped without it.
    n_repeats: independent repeats of the reverse ESS.
    chunk: maximum number of samples per call of the sampler / density.
    clip_fraction: fraction of log weights clipped in ``reverse_ess_clipped``.
    mode_threshold: a mode is covered when it holds ≥ this × its true share.

  Returns:
    A dict of Python floats / ints / lists:
      * ``reverse_ess``, ``reverse_ess_clipped``: median over repeats (fractions in [0, 1]);
        ``reverse_ess_repeats``: the per-repeat values.
      * ``log_z`` (reverse estimate, all repeats pooled), ``log_z_error`` = log_z - log_Z
        (signed; only when ``target.log_Z`` is known), ``elbo``, ``n_nonfinite`` (dropped
        model log weights), ``n_samples`` (total model samples).
      * with ``target.sample`` and ``log_prob_fn``: n_samples · n_repeats exact samples give
        ``eubo``, ``forward_ess``, ``log_z_forward``, ``nll`` (-mean log q) and
        ``n_nonfinite_ref``.
      * with known modes: ``modes_covered`` and ``mode_tv`` from unweighted model samples,
        ``mode_tv_reweighted`` from importance-weighted ones, and ``n_modes``.
      * with ``well_boundary`` / ``right_well_prob`` in ``target.info`` (many-well, double
        well): ``well_occupancy_tv`` and ``well_occupancy_tv_reweighted``.
  """
  if n_samples < 1 or n_repeats < 1 or chunk < 1:
    raise ValueError(f"need n_samples, n_repeats, chunk >= 1, got {n_samples}, "
                     f"{n_repeats}, {chunk}")
  key_model, key_ref = jax.random.split(key)
  repeats = [_batched_stats(target, sample_and_log_prob, k, n_samples, chunk)
             for k in jax.random.split(key_model, n_repeats)]
  log_w_rep = [jnp.asarray(r["log_w"]) for r in repeats]
  log_w = jnp.concatenate(log_w_rep)
  ess = [float(reverse_ess(lw)) for lw in log_w_rep]
  ess_clipped = [float(reverse_ess_clipped(lw, clip_fraction)) for lw in log_w_rep]
  result: dict[str, Any] = {
      "reverse_ess": float(np.median(ess)),
      "reverse_ess_clipped": float(np.median(ess_clipped)),
      "reverse_ess_repeats": ess,
      "log_z": float(log_z_reverse(log_w)),
      "elbo": float(elbo(log_w)),
      "n_nonfinite": int(count_nonfinite(log_w)),
      "n_samples": int(log_w.shape[0]),
  }
  if target.log_Z is not None:
    result["log_z_error"] = result["log_z"] - float(target.log_Z)

  finite = jnp.isfinite(log_w).astype(jnp.float32)
  w_bar = normalized_weights(log_w)
  if target.mode_weights is not None:
    mode_idx = jnp.asarray(np.concatenate([r["mode_idx"] for r in repeats]))
    true_w = jnp.asarray(target.mode_weights, jnp.float32)
    n_modes = int(true_w.shape[0])
    occ = mode_occupancy(mode_idx, n_modes, finite)
    occ_rw = mode_occupancy(mode_idx, n_modes, w_bar)
    result["modes_covered"] = int(modes_covered(occ, true_w, mode_threshold))
    result["n_modes"] = n_modes
    result["mode_tv"] = float(mode_tv(occ, true_w))
    result["mode_tv_reweighted"] = float(mode_tv(occ_rw, true_w))
  if "well_boundary" in target.info and "right_well_prob" in target.info:
    right = jnp.asarray(np.concatenate([r["right"] for r in repeats]))
    p_right = float(target.info["right_well_prob"])
    for suffix, weights in (("", finite), ("_reweighted", w_bar)):
      frac = _weighted_fraction(right, weights)
      result["well_occupancy_tv" + suffix] = float(jnp.mean(jnp.abs(frac - p_right)))

  if target.sample is not None and log_prob_fn is not None:
    def draw_ref(k: Array, n: int) -> tuple[Array, Array]:
      x = target.sample(k, n)
      return x, log_prob_fn(x)

    ref = _batched_stats(target, draw_ref, key_ref, n_samples * n_repeats, chunk)
    log_w_ref = jnp.asarray(ref["log_w"])
    log_q_ref = jnp.asarray(ref["log_q"])
    ok = jnp.isfinite(log_q_ref)
    result["eubo"] = float(eubo(log_w_ref))
    result["forward_ess"] = float(forward_ess(log_w_ref))
    result["log_z_forward"] = float(log_z_forward(log_w_ref))
    result["nll"] = float(-jnp.sum(jnp.where(ok, log_q_ref, 0.0)) / max(int(ok.sum()), 1))
    result["n_nonfinite_ref"] = int(count_nonfinite(log_w_ref))
  return result
