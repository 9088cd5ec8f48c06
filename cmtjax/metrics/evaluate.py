"""Host-side evaluation of a sampler against a target: every metric of cmtjax.metrics at once."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.metrics.ess import reverse_ess, reverse_ess_clipped
from cmtjax.metrics.evidence import elbo, log_z_reverse, reference_weight_figures
from cmtjax.metrics.modes import _weighted_fraction, mode_occupancy, mode_tv, modes_covered
from cmtjax.metrics.weights import count_nonfinite, normalised_weights
from cmtjax.sampling.chunks import draw_in_chunks, map_in_chunks
from cmtjax.targets.base import Target

Array = jax.Array
SampleAndLogProbFn = Callable[[Array, int], tuple[Array, Array]]


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
  boundary = target.info.get("well_boundary")
  out: dict[str, list[np.ndarray]] = {"log_w": [], "log_q": [], "mode_idx": [], "right": []}
  for x, log_q in draw_in_chunks(draw, key, n, chunk):
    log_q = np.asarray(log_q)
    out["log_w"].append(np.asarray(target.log_prob(x)) - log_q)
    out["log_q"].append(log_q)
    if target.mode_weights is not None:
      out["mode_idx"].append(np.asarray(target.assign_modes(x)))
    if boundary is not None:
      out["right"].append(np.asarray(x)[:, 0::2] > boundary)
  return {name: np.concatenate(v) for name, v in out.items() if v}


def _log_z_standard_error(log_w: Array) -> Array:
  """Standard error of the reverse estimate log mean(w) (delta method, finite weights):
  sqrt((1/ESS − 1) / n) with ESS the pooled fraction (Σw)² / (n Σw²)."""
  ok = jnp.isfinite(log_w)
  n = jnp.maximum(jnp.sum(ok), 1).astype(jnp.float32)
  w = jnp.where(ok, jnp.exp(log_w - jnp.max(jnp.where(ok, log_w, -jnp.inf))), 0.0)
  ratio = n * jnp.sum(w * w) / jnp.maximum(jnp.sum(w), 1e-30) ** 2  # = 1 / ESS fraction
  return jnp.sqrt(jnp.maximum(ratio - 1.0, 0.0) / n)


@functools.partial(jax.jit, static_argnames="clip_fraction")
def _model_figures(log_w_rep: Array, clip_fraction: float) -> dict[str, Array]:
  """Reverse figures of ``log_w_rep: [n_repeats, n]`` in one compiled call."""
  log_w = log_w_rep.reshape(-1)
  return {
      "ess": jax.vmap(reverse_ess)(log_w_rep),
      "ess_clipped": jax.vmap(lambda lw: reverse_ess_clipped(lw, clip_fraction))(log_w_rep),
      "log_z": log_z_reverse(log_w),
      "log_z_se": _log_z_standard_error(log_w),
      "elbo": elbo(log_w),
      "n_nonfinite": count_nonfinite(log_w),
      "finite": jnp.isfinite(log_w).astype(jnp.float32),
      "w_bar": normalised_weights(log_w),
  }


@functools.partial(jax.jit, static_argnames="n_modes")
def _mode_figures(mode_idx, finite, w_bar, true_w, threshold, n_modes):
  """Mode coverage of ``mode_idx: [n]``, unweighted (finite entries) and reweighted."""
  occ = mode_occupancy(mode_idx, n_modes, finite)
  return {
      "modes_covered": modes_covered(occ, true_w, threshold),
      "mode_tv": mode_tv(occ, true_w),
      "mode_tv_reweighted": mode_tv(mode_occupancy(mode_idx, n_modes, w_bar), true_w),
  }


@jax.jit
def _well_figures(right, finite, w_bar, p_right):
  """Well occupancy TV of ``right: [n, n_copies]`` (x1 in the right well), plain and reweighted."""
  tv = lambda w: jnp.mean(jnp.abs(_weighted_fraction(right, w) - p_right))
  return {"well_occupancy_tv": tv(finite), "well_occupancy_tv_reweighted": tv(w_bar)}


@jax.jit
def _forward_figures(log_w_ref, log_q_ref):
  """Forward figures of reference samples: ``log_w_ref``, ``log_q_ref``: [n]."""
  ok = jnp.isfinite(log_q_ref)
  return {
      **reference_weight_figures(log_w_ref),
      # NaN, not 0, when no reference sample has a finite log q (as the molecular metrics)
      "nll": jnp.where(jnp.any(ok),
                       -jnp.sum(jnp.where(ok, log_q_ref, 0.0)) / jnp.maximum(jnp.sum(ok), 1),
                       jnp.nan),
      "n_nonfinite_ref": count_nonfinite(log_w_ref),
  }


def _to_python(figures: dict[str, Array]) -> dict[str, Any]:
  """Scalars to Python ints (integer dtypes) and floats."""
  out = {}
  for k, v in jax.device_get(figures).items():
    v = np.asarray(v)
    out[k] = int(v) if np.issubdtype(v.dtype, np.integer) else float(v)
  return out


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
      * ``log_z`` (reverse estimate, all repeats pooled) and ``log_z_se``, its standard
        error (delta method; blind to mass the model never samples), ``log_z_error`` = log_z - log_Z
        (signed; only when ``target.log_Z`` is known), ``elbo``, ``n_nonfinite`` (dropped
        model log weights), ``n_samples`` (total model samples).
      * with ``target.sample`` and ``log_prob_fn``: n_samples · n_repeats exact samples give
        ``eubo``, ``forward_ess``, ``log_z_forward``, ``nll`` (-mean log q) and
        ``n_nonfinite_ref``.
      * with known modes: ``modes_covered`` and ``mode_tv`` from unweighted model samples,
        ``mode_tv_reweighted`` from importance-weighted ones, and ``n_modes``. Samples with
        a non-finite log weight are left out of both.
      * with ``well_boundary`` / ``right_well_prob`` in ``target.info`` (many-well, double
        well): ``well_occupancy_tv`` and ``well_occupancy_tv_reweighted``.
  """
  if n_samples < 1 or n_repeats < 1 or chunk < 1:
    raise ValueError(f"need n_samples, n_repeats, chunk >= 1, got {n_samples}, "
                     f"{n_repeats}, {chunk}")
  key_model, key_ref = jax.random.split(key)
  repeats = [_batched_stats(target, sample_and_log_prob, k, n_samples, chunk)
             for k in jax.random.split(key_model, n_repeats)]
  figs = _model_figures(jnp.asarray(np.stack([r["log_w"] for r in repeats])), clip_fraction)
  ess = [float(v) for v in np.asarray(figs["ess"])]
  result: dict[str, Any] = {
      "reverse_ess": float(np.median(ess)),
      "reverse_ess_clipped": float(np.median(np.asarray(figs["ess_clipped"]))),
      "reverse_ess_repeats": ess,
      **_to_python({k: figs[k] for k in ("log_z", "log_z_se", "elbo", "n_nonfinite")}),
      "n_samples": n_samples * n_repeats,
  }
  if target.log_Z is not None:
    result["log_z_error"] = result["log_z"] - float(target.log_Z)
  if target.mode_weights is not None:
    true_w = jnp.asarray(target.mode_weights, jnp.float32)
    mode_idx = jnp.asarray(np.concatenate([r["mode_idx"] for r in repeats]))
    result.update(_to_python(_mode_figures(
        mode_idx, figs["finite"], figs["w_bar"], true_w, mode_threshold,
        n_modes=int(true_w.shape[0]))))
    result["n_modes"] = int(true_w.shape[0])
  if "well_boundary" in target.info and "right_well_prob" in target.info:
    right = jnp.asarray(np.concatenate([r["right"] for r in repeats]))
    result.update(_to_python(_well_figures(
        right, figs["finite"], figs["w_bar"], float(target.info["right_well_prob"]))))

  if target.sample is not None and log_prob_fn is not None:
    def draw_ref(k: Array, n: int) -> tuple[Array, Array]:
      x = target.sample(k, n)
      return x, log_prob_fn(x)

    ref = _batched_stats(target, draw_ref, key_ref, n_samples * n_repeats, chunk)
    result.update(_to_python(_forward_figures(jnp.asarray(ref["log_w"]),
                                              jnp.asarray(ref["log_q"]))))
  return result


def evaluate_particles(
    target: Target,
    x: Array,
    log_w: Array,
    log_z: Optional[float] = None,
    *,
    chunk: int = 16384,
    mode_threshold: float = 0.25,
) -> dict[str, Any]:
  """Evaluates a weighted particle set (a sampler without a density, e.g. SMC).

  The flow figures of :func:`evaluate` need a model density; a particle set has none, so
  this gives what it can: the particles' own ESS, the sampler's log Z, and the mode or well
  figures of the unweighted (``modes_covered``, ``mode_tv``) and weighted
  (``mode_tv_reweighted``) particles.

  Args:
    target: the target.
    x: [N, dim] particles.
    log_w: [N] their log weights (normalised or not; -inf for weight 0).
    log_z: the sampler's own log Z estimate (None: not reported).
    chunk: particles per call of the target's mode assignment.
    mode_threshold: a mode is covered when it holds ≥ this × its true share.

  Returns:
    ``particle_ess`` (ESS of the weights as a fraction of N), ``n_particles``, ``log_z``
    and ``log_z_error`` (when both are known), and the mode / well figures.
  """
  x = np.asarray(x)
  log_w = np.asarray(log_w, np.float64)
  n = int(x.shape[0])
  if x.ndim != 2 or log_w.shape != (n,) or n < 1:
    raise ValueError(f"need x [N, dim] and log_w [N], got {x.shape} and {log_w.shape}")
  w_bar = np.asarray(normalised_weights(jnp.asarray(log_w)), np.float64)
  result: dict[str, Any] = {
      "particle_ess": float(1.0 / np.sum(w_bar ** 2) / n) if w_bar.sum() > 0 else 0.0,
      "n_particles": n,
  }
  if log_z is not None:
    result["log_z"] = float(log_z)
    if target.log_Z is not None:
      result["log_z_error"] = result["log_z"] - float(target.log_Z)
  finite = jnp.asarray(np.isfinite(log_w).astype(np.float32))
  if target.mode_weights is not None:
    true_w = jnp.asarray(target.mode_weights, jnp.float32)
    mode_idx = jnp.asarray(map_in_chunks(target.assign_modes, x, chunk))
    result.update(_to_python(_mode_figures(mode_idx, finite, jnp.asarray(w_bar, jnp.float32),
                                           true_w, mode_threshold,
                                           n_modes=int(true_w.shape[0]))))
    result["n_modes"] = int(true_w.shape[0])
  if "well_boundary" in target.info and "right_well_prob" in target.info:
    right = jnp.asarray(x[:, 0::2] > target.info["well_boundary"])
    result.update(_to_python(_well_figures(right, finite, jnp.asarray(w_bar, jnp.float32),
                                           float(target.info["right_well_prob"]))))
  return result
