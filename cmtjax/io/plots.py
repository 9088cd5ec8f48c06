"""PNG plots of a run: samples over the target, the learned schedule, ESS against budget.

Host-side matplotlib (Agg backend); every function writes one file and returns its path.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: str, title: str = "", dpi: int = 100) -> str:
  """Titles, lays out, writes and closes ``fig``; returns ``path``."""
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi, bbox_inches="tight")  # legends placed outside the axes included
  plt.close(fig)
  return path


def _column(records: Sequence[dict], key: str) -> np.ndarray:
  return np.array([np.nan if r.get(key) is None else float(r[key]) for r in records])


def entropy_drop_between_buffers(records: Sequence[dict]) -> np.ndarray:
  """H(q̂_i) − H(q̂_{i+1}) from consecutive buffers (plain Monte Carlo, no importance weights);
  NaN for the last step. More reliable than the importance-sampled estimate logged as
  ``realised_entropy_drop``, which is biased when the fit moves the flow far."""
  h = _column(records, "entropy")
  out = np.full_like(h, np.nan)
  out[:-1] = h[:-1] - h[1:]
  return out


def plot_samples(path: str, log_prob_2d, model_x: np.ndarray, bounds: tuple[float, float],
                 title: str = "", ref_x: Optional[np.ndarray] = None,
                 mode_centres: Optional[np.ndarray] = None) -> str:
  """Model samples (first two coordinates) over the target's density.

  Args:
    path: PNG file to write.
    log_prob_2d: ``[M, 2] -> [M]`` log density of the first two coordinates for the
      contour (None to skip, e.g. for projections of higher-dimensional targets).
    model_x: ``[n, >=2]`` model samples.
    bounds: plotting box (low, high) for both axes.
    title: figure title.
    ref_x: optional ``[m, >=2]`` exact target samples shown in a second panel.
    mode_centres: optional ``[k, >=2]`` mode centres, marked with crosses.
  """
  n_panels = 2 if ref_x is not None else 1
  fig, axes = plt.subplots(1, n_panels, figsize=(5.5 * n_panels, 5), squeeze=False)
  lo, hi = bounds
  panels = [("model samples", model_x)] + ([("exact target samples", ref_x)]
                                           if ref_x is not None else [])
  for ax, (label, xs) in zip(axes[0], panels):
    if log_prob_2d is not None:
      g = np.linspace(lo, hi, 200)
      gx, gy = np.meshgrid(g, g)
      lp = np.asarray(log_prob_2d(np.stack([gx.ravel(), gy.ravel()], -1))).reshape(gx.shape)
      lp = np.maximum(lp, np.nanmax(lp) - 30.0)
      ax.contourf(gx, gy, lp, levels=40, cmap="viridis", alpha=0.85)
    ax.scatter(xs[:, 0], xs[:, 1], s=1.5, c="red", alpha=0.35, linewidths=0)
    if mode_centres is not None:
      ax.scatter(mode_centres[:, 0], mode_centres[:, 1], marker="x", c="white", s=18)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_title(label)
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
  return save_figure(fig, path, title, dpi=110)


def plot_schedule(path: str, records: Sequence[dict], eps_tr: Optional[float] = None,
                  eps_ent: Optional[float] = None, title: str = "") -> str:
  """The learned schedule: λ, η, α, β, step ESS, KL and entropy per annealing step.

  Requested values (what the dual chose on the buffer) are solid, realised values (what the
  fitted flow achieved) dashed, bounds dotted. Molecules get the φ > 0 share per residue and,
  with peptide bonds, the cis share per bond (a fifth column).
  """
  steps = _column(records, "step")
  modes_b = _column(records, "modes_buffer")
  has_modes = bool(np.any(modes_b >= 0))
  # Molecules: the φ > 0 share per residue, [n_steps, n_pairs].
  phi_w = _per_component(records, "phi_pos_weighted")
  has_basins = phi_w is not None
  cis_w = _per_component(records, "cis_weighted") if not has_modes else None
  wide = has_modes or has_basins or cis_w is not None
  n_cols = 3 + int(wide) + int(cis_w is not None)
  fig, axes = plt.subplots(2, n_cols, figsize=(5 * n_cols, 7.5))
  ax = axes[0, 0]
  for key, label in (("lambda", "λ"), ("eta", "η")):
    v = _column(records, key)
    ax.plot(steps, np.where(v > 0, v, np.nan), label=label)
  ax.set_yscale("log")
  ax.set_title("multipliers (0 not shown)")
  ax.legend()
  ax = axes[0, 1]
  for key, label in (("alpha", "α"), ("beta", "β")):
    ax.plot(steps, _column(records, key), label=label)
  ax.set_ylim(-0.02, 1.02)
  ax.set_title("path: q_i ∝ q_0^(1−β) p̃^(αβ)")
  ax.legend()
  ax = axes[0, 2]
  ax.plot(steps, _column(records, "step_ess"), label="step ESS (buffer weights)")
  fit_ess = _column(records, "fit_ess")
  if np.any(np.abs(np.asarray(fit_ess, float) - np.asarray(_column(records, "step_ess"), float))
            > 1e-6):  # an anchored run (cmt.anchor): the fit's own weights
    ax.plot(steps, fit_ess, "--", label="fit ESS (anchored weights)")
  if eps_tr is not None:
    ax.axhline(1.0 / (1.0 + 2.0 * eps_tr), ls=":", c="k", label="1/(1+2ε_tr)")
  ax.set_ylim(0, 1.02)
  ax.set_title("step ESS")
  ax.legend()
  ax = axes[1, 0]
  ax.plot(steps, _column(records, "kl"), label="requested KL̂(q_{i+1}‖q_i)")
  ax.plot(steps, _column(records, "realised_kl"), "--", label="realised (fitted flow)")
  if eps_tr is not None:
    ax.axhline(eps_tr, ls=":", c="k", label="ε_tr")
  ax.set_title("KL per step")
  ax.legend()
  ax = axes[1, 1]
  ax.plot(steps, _column(records, "entropy_drop"), label="requested entropy drop")
  ax.plot(steps, entropy_drop_between_buffers(records), "--",
          label="between buffers: H(q̂_i) − H(q̂_{i+1})")
  if eps_ent is not None:
    ax.axhline(eps_ent, ls=":", c="k", label="ε_ent")
  ax.set_title("entropy drop per step")
  ax.legend()
  ax = axes[1, 2]
  ax.plot(steps, _column(records, "entropy"), label="H(q_i) (buffer estimate)")
  ax.set_title("model entropy")
  ax.legend()
  if has_modes:
    axes[0, 3].plot(steps, modes_b, label="modes in buffer (q̂_i)")
    axes[0, 3].plot(steps, _column(records, "modes_weighted"), "--",
                    label="modes under w̄ (q_{i+1})")
    axes[0, 3].set_title("modes holding ≥ 1/4 of their share")
    axes[0, 3].legend()
  elif has_basins:
    ax = axes[0, 3]
    _plot_shares(ax, steps, phi_w, _per_component(records, "phi_pos_buffer"), "residue")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title("share with backbone φ > 0 (dashed: buffer q̂_i)")
  if cis_w is not None:
    _plot_shares(axes[0, 4], steps, cis_w, _per_component(records, "cis_buffer"), "bond")
    axes[0, 4].set_yscale("symlog", linthresh=1e-5)
    axes[0, 4].set_title("share with a cis peptide bond (dashed: buffer q̂_i)")
    axes[1, 4].axis("off")
  if wide:
    axes[1, 3].plot(steps, _column(records, "fit_kl"), label="KL(q_{i+1} ‖ fitted flow)")
    axes[1, 3].set_title("fit error")
    axes[1, 3].legend()
  for a in axes.ravel():
    a.set_xlabel("annealing step")
  return save_figure(fig, path, title, dpi=100)


def _plot_shares(ax, steps, weighted: np.ndarray, buffer: Optional[np.ndarray],
                 what: str) -> None:
  """One colour per component (residue, bond): its share under w̄ solid, in the buffer dashed."""
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for r in range(weighted.shape[1]):
    c = colors[r % len(colors)]
    ax.plot(steps, weighted[:, r], color=c, label=f"{what} {r + 1} under w̄ (q_{{i+1}})")
    if buffer is not None:
      ax.plot(steps, buffer[:, r], "--", color=c, alpha=0.7)
  ax.legend(fontsize=8)


def _per_component(records: Sequence[dict], key: str) -> Optional[np.ndarray]:
  """A per-component record figure as [n_records, n_components] (None where absent)."""
  rows = [r.get(key) for r in records]
  if not rows or any(not isinstance(v, list) or not v for v in rows):
    return None
  if len({len(v) for v in rows}) != 1:
    return None
  return np.array([[np.nan if u is None else u for u in v] for v in rows], np.float64)


def plot_training_curve(path: str, records: Sequence[dict], keys: Sequence[str],
                        title: str = "") -> str:
  """Per-step curves of arbitrary record keys (used for methods without a schedule)."""
  fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
  steps = _column(records, "step")
  for ax, key in zip(axes[0], keys):
    ax.plot(steps, _column(records, key))
    ax.set_title(key)
    ax.set_xlabel("outer step")
  return save_figure(fig, path, title, dpi=100)


def plot_ess_vs_evals(path: str, curves: dict[str, Sequence[Sequence[dict]]],
                      title: str = "", x_key: str = "target_evals",
                      x_label: str = "target evaluations (training)") -> str:
  """Reverse ESS against target evaluations (or another cost), on a linear and a log scale.

  Args:
    path: PNG file to write.
    curves: label -> the evaluation records (``x_key``, ``reverse_ess``) of each of its runs;
      several runs (seeds) of a label are drawn as their mean ± standard error, over the
      evaluations all of them reached, at the mean of their x values (the same for every run
      when x counts evaluations; wall times differ a little between seeds).
    title: figure title.
    x_key: the records' field on the x axis (log scale), e.g. ``training_seconds``.
    x_label: its axis title.
  """
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
  plotted = positive = False
  for label, runs in curves.items():
    runs = [r for r in runs if len(r)]
    if not runs:
      continue
    n = min(len(r) for r in runs)
    y = np.stack([_column(r[:n], "reverse_ess") for r in runs])
    with warnings.catch_warnings():  # a column of missing values is a gap in the curve
      warnings.simplefilter("ignore", RuntimeWarning)
      x = np.nanmean(np.stack([_column(r[:n], x_key) for r in runs]), axis=0)
      mean = np.nanmean(y, axis=0)
      se = np.nanstd(y, axis=0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else None
    # Points without an x value (e.g. no time recorded) or without an ESS (a particle
    # sampler's evaluations have none) are left out.
    ok = np.isfinite(x) & (x > 0) & np.isfinite(mean)
    if not ok.any():
      continue
    plotted = True
    x, mean = x[ok], mean[ok]
    positive = positive or bool(np.any(mean > 0))
    name = f"{label} ({len(runs)} seeds)" if len(runs) > 1 else label
    for ax in axes:
      line, = ax.plot(x, mean, marker="o", ms=3, label=name)
      if se is not None:
        ax.fill_between(x, np.maximum(mean - se[ok], 1e-12), mean + se[ok],
                        color=line.get_color(), alpha=0.2)
  # Nothing to draw (e.g. no run recorded its times): an empty figure, not an error.
  for ax, scale in zip(axes if plotted else (), ("linear", "log")):
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: no clutter
    if scale == "linear" or not positive:  # a log axis needs a positive value to show
      ax.set_ylim(0, 1.02)
    else:
      ax.set_yscale(scale)
      ax.set_ylim(top=1.5)
    ax.set_xlabel(x_label)
    ax.set_ylabel("reverse ESS" + (" (log scale)" if scale == "log" else ""))
    ax.grid(alpha=0.3)
  if plotted:
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
  return save_figure(fig, path, title, dpi=110)


def plot_ablation(path: str, curves: dict[str, Sequence[dict]], title: str = "") -> str:
  """Per-step curves of several annealing runs side by side (an ablation figure).

  Args:
    path: PNG file to write.
    curves: variant name -> its step records (``steps.jsonl`` lines).
    title: figure title.
  """
  panels = [("entropy", "model entropy H(q̂_i)", None),
            ("entropy_drop", "entropy drop per step (solid: requested, dashed: realised)",
             "entropy_from_buffers"),
            ("kl", "KL per step (solid: requested, dashed: realised)", "realised_kl"),
            ("step_ess", "step ESS of the buffer weights", None),
            ("modes_weighted", "modes under w̄ (solid) and in the buffer (dashed)",
             "modes_buffer")]
  fig, grid = plt.subplots(2, 3, figsize=(16, 8.5))
  axes = grid.ravel()
  axes[-1].axis("off")
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for j, (name, records) in enumerate(curves.items()):
    c = colors[j % len(colors)]
    steps = _column(records, "step")
    for ax, (key, label, second) in zip(axes, panels):
      ax.plot(steps, _column(records, key), color=c, label=name)
      if second == "entropy_from_buffers":
        ax.plot(steps, entropy_drop_between_buffers(records), "--", color=c, alpha=0.7)
      elif second is not None:
        ax.plot(steps, _column(records, second), "--", color=c, alpha=0.7)
      ax.set_title(label, fontsize=9)
      ax.set_xlabel("annealing step")
  axes[3].set_yscale("log")
  axes[0].legend(fontsize=8)
  return save_figure(fig, path, title, dpi=100)
