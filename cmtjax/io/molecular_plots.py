"""PNG plots of molecular samples: Ramachandran histograms and energy histograms.

Host-side matplotlib (Agg backend), in the style of :mod:`cmtjax.io.plots`: every function
writes one file and returns its path. Angles come in radians on (-π, π] as
``phi_psi: [n, n_pairs, 2]`` (or ``[n, 2]`` for one pair), see
:func:`cmtjax.metrics.backbone_angles`; they are shown in degrees. Energies are in kJ/mol.
"""

from __future__ import annotations

from typing import Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cmtjax.metrics.molecular import _as_pairs, _weights, ramachandran_histogram  # noqa: E402


def _pair_list(pairs: Union[int, Sequence[int], str, None], n_pairs: int) -> list[int]:
  if pairs is None:
    pairs = [0]
  elif pairs == "all":
    pairs = list(range(n_pairs))
  elif isinstance(pairs, (int, np.integer)):
    pairs = [int(pairs)]
  pairs = [int(p) for p in pairs]
  bad = [p for p in pairs if not 0 <= p < n_pairs]
  if bad or not pairs:
    raise ValueError(f"backbone pairs {pairs} out of range for {n_pairs} pairs")
  return pairs


def plot_ramachandran(
    path: str,
    model_phi_psi,
    ref_phi_psi,
    model_weights=None,
    titles: Sequence[str] = ("model", "model, reweighted", "reference"),
    pairs: Union[int, Sequence[int], str, None] = None,
    bins: int = 100,
    title: str = "",
) -> str:
  """Log-density Ramachandran histograms: model, reweighted model, reference side by side.

  Each panel is the 2-D histogram of (φ, ψ) on (-180°, 180°]² (``bins`` per axis, the binning
  of :func:`cmtjax.metrics.ramachandran_histogram`) shown as log10 of the probability per
  bin; empty bins are white. The panels of a row share one colour scale.

  Args:
    path: PNG file to write.
    model_phi_psi: [n, n_pairs, 2] (or [n, 2]) model angles in radians.
    ref_phi_psi: [m, n_pairs, 2] (or [m, 2]) reference angles in radians.
    model_weights: optional [n] importance weights of the model samples; without them the
      reweighted panel is left out.
    titles: panel titles (model, reweighted model, reference).
    pairs: backbone pair(s) to show, one row each: an index, a list of indices, or "all";
      the first pair by default.
    bins: bins per axis.
    title: figure title.

  Returns:
    ``path``.
  """
  model = _as_pairs(model_phi_psi)
  ref = _as_pairs(ref_phi_psi)
  if model.shape[1] != ref.shape[1]:
    raise ValueError(f"model has {model.shape[1]} backbone pairs, reference {ref.shape[1]}")
  rows = _pair_list(pairs, model.shape[1])
  panels = [(titles[0], model, None)]
  if model_weights is not None:
    panels.append((titles[1], model, _weights(model_weights, model.shape[0])))
  panels.append((titles[2], ref, None))
  fig, axes = plt.subplots(len(rows), len(panels), figsize=(4.2 * len(panels) + 1.0,
                                                         4.0 * len(rows) + 0.4),
                           squeeze=False, layout="constrained")
  extent = (-180.0, 180.0, -180.0, 180.0)
  for r, j in enumerate(rows):
    logs = []
    for _, a, w in panels:
      h = ramachandran_histogram(a[:, j, 0], a[:, j, 1], w, bins) if a.shape[0] else (
          np.zeros((bins, bins)))
      with np.errstate(divide="ignore"):
        logs.append(np.where(h > 0, np.log10(np.where(h > 0, h, 1.0)), np.nan))
    finite = np.concatenate([v[np.isfinite(v)] for v in logs] + [np.zeros(0)])
    vmax = float(finite.max()) if finite.size else 0.0
    vmin = max(float(finite.min()) if finite.size else -1.0, vmax - 6.0)
    for ax, (label, a, _), lg in zip(axes[r], panels, logs):
      # Rows of the histogram are φ (x axis), columns ψ (y axis): transpose for imshow.
      im = ax.imshow(lg.T, origin="lower", extent=extent, aspect="equal", cmap="viridis",
                     vmin=vmin, vmax=vmax, interpolation="nearest")
      ax.set_title(f"{label} (pair {j}, n={a.shape[0]})", fontsize=10)
      ax.set_xlabel("φ (degrees)")
      ax.set_ylabel("ψ (degrees)")
      ax.set_xticks(np.arange(-180, 181, 90))
      ax.set_yticks(np.arange(-180, 181, 90))
    fig.colorbar(im, ax=list(axes[r]), shrink=0.85, label="log10 probability per bin")
  fig.suptitle(title)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_energy_histograms(
    path: str,
    e_model,
    e_ref,
    model_weights=None,
    bins: int = 100,
    quantiles: tuple[float, float] = (0.001, 0.999),
    title: str = "",
) -> str:
  """Energy histograms of model, reweighted model and reference samples, overlaid.

  The plotted range is the reference's ``quantiles`` widened by 10 % of their spread on each
  side, so a few high-energy model samples cannot squash the plot; the legend says how many
  model samples (and how much reweighted mass) lie beyond it, and how many model energies are
  not finite (those are left out entirely). Histograms are densities over the plotted range.

  Args:
    path: PNG file to write.
    e_model: [n] model energies (kJ/mol).
    e_ref: [m] reference energies (kJ/mol), or None when there is no reference (the range
      then comes from the model's own energies).
    model_weights: optional [n] importance weights of the model samples.
    bins: number of bins.
    quantiles: reference quantiles that set the range.
    title: figure title.

  Returns:
    ``path``.
  """
  e_model = np.asarray(e_model, np.float64).ravel()
  finite = np.isfinite(e_model)
  if e_ref is not None:
    e_ref = np.asarray(e_ref, np.float64).ravel()
    e_ref = e_ref[np.isfinite(e_ref)]
    if e_ref.size == 0:
      raise ValueError("no finite reference energy")
  elif not np.any(finite):
    raise ValueError("no finite model energy and no reference")
  w = _weights(model_weights, e_model.size) if model_weights is not None else None
  lo, hi = np.quantile(e_ref if e_ref is not None else e_model[finite], quantiles)
  pad = 0.1 * max(hi - lo, 1e-6)
  lo, hi = lo - pad, hi + pad
  em = e_model[finite]
  inside = (em >= lo) & (em <= hi)
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  edges = np.linspace(lo, hi, bins + 1)
  n_out = int(np.sum(~inside))
  label = (f"model (n={e_model.size}; {n_out} beyond range, "
           f"{int(np.sum(~finite))} non-finite)")
  if np.any(inside):
    ax.hist(em[inside], bins=edges, density=True, histtype="step", lw=1.5, label=label)
  else:  # nothing to draw (e.g. an untrained flow): keep the legend entry
    ax.plot([], [], lw=1.5, label=label)
  if w is not None:
    wm = w[finite]
    mass_out = float(np.sum(wm[~inside]))
    if np.sum(wm[inside]) > 0:
      ax.hist(em[inside], bins=edges, weights=wm[inside], density=True, histtype="step",
              lw=1.5, label=f"model, reweighted ({mass_out:.2g} of the weight beyond range)")
  if e_ref is not None:
    ax.hist(e_ref[(e_ref >= lo) & (e_ref <= hi)], bins=edges, density=True,
            histtype="stepfilled", alpha=0.3, color="k", label=f"reference (n={e_ref.size})")
  else:
    ax.plot([], [], color="k", alpha=0.3, lw=6, label="no reference samples")
  ax.set_xlim(lo, hi)
  ax.set_xlabel("energy (kJ/mol)")
  ax.set_ylabel("density")
  ax.legend(fontsize=8)
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
