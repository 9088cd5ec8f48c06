"""The CMT ablation on GMM-16 in d dimensions: which constraints keep the modes.

All variants run through the same loop at the same budget of target evaluations, with the same
flow, on GMM-16 (16 unit-variance modes, means uniform in [-20, 20]^d, log Z = 0; flow base
N(0, 12² I) so that H(q_0) > H(p)):

  cmt               both constraints (geometric-tempered path)
  trust_region_only geometric path (η ≡ 0)
  entropy_only      tempered path (λ ≡ 0)
  none              importance-weighted forward KL straight to the target
  fixed_geometric   geometric path with a linear β schedule of as many steps as the CMT run of
                    the same dimension and seed took to reach the target
  reverse_kl        reverse KL (outer steps of 10 optimiser steps of 1024 samples, so that its
                    budget matches the others' to within 1 %)

Run by hand (one command; minutes per run on 2 CPU cores). The commands behind
benchmarks/results/ablation*.{md,png} and docs/ablation.md:

  # (a) the preset (N = 1e4, K = 100, 6 layers 2x64, eps_tr 0.3, eps_ent 1.0), two seeds
  .venv/bin/python benchmarks/ablation.py --name ablation --dims 10 5 --seeds 0 1 \\
      --budget 3e5 --set eval.n_samples=20000 --set eval.n_repeats=3 --set eval.every=0
  # (b) buffer N = 5e4 (instead of 1e4), everything else as the preset: CMT keeps all 16
  # modes at d = 10 (see docs/ablation.md)
  .venv/bin/python benchmarks/ablation.py --name ablation_d10_tuned --dims 10 --seeds 0 1 \\
      --budget 3e6 --set cmt.n_samples=50000 \\
      --set eval.n_samples=20000 --set eval.n_repeats=3 --set eval.every=0
  # (docs/ablation.md lists the commands of the d = 5 CMT runs at N = 5e4 and of the control run)

Options: ``--set KEY=VALUE`` overrides the config of every run, ``--set-variant
VARIANT:KEY=VALUE`` of one variant only; ``--name`` is the stem of the result files
(``{out}/{name}.json``, ``{name}.md``, ``{name}_d{d}.png`` — per-step curves of every path —
and ``{name}_summary.png`` — the final figures of every path side by side) and of the run
folders (``{runs}/{name}/d{d}_s{seed}_{variant}``); ``--skip-done`` reuses a finished run whose
folder holds a ``metrics.json`` and the same ``config.json`` instead of running it again (config
keys the library gained after the run are not compared); ``--jobs J`` runs J runs at a time, each
in its own process pinned to a share of the CPUs (fixed_geometric still waits for its cmt run).

Every row records the run's wall time and the CPU seconds of this process during the run
(user + system, all threads; compile and final evaluation included), so that a claim such as
"10 minutes on 2 cores" can be judged on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grid  # noqa: E402

from cmtjax.io import plots  # noqa: E402
from cmtjax.io.config import parse_override  # noqa: E402

VARIANTS = {
    "cmt": {"method": "cmt", "cmt": {"path": "geometric_tempered"}},
    "trust_region_only": {"method": "cmt", "cmt": {"path": "geometric"}},
    "entropy_only": {"method": "cmt", "cmt": {"path": "tempered"}},
    "none": {"method": "cmt", "cmt": {"path": "none"}},
    "fixed_geometric": {"method": "cmt", "cmt": {"schedule": "linear_beta"}},
    "reverse_kl": {"method": "reverse_kl", "reverse_kl": {"n_grad_steps": 10}},
}
# Summary columns of the table and the format of their means; mean ± s.e. over seeds.
MEAN_COLUMNS = (("mode_tv", ".3g"), ("mode_tv_reweighted", ".3g"), ("abs_log_z_error", ".3g"),
                ("reverse_ess", ".3g"))
SECONDS_COLUMNS = (("total_seconds", ".0f"), ("cpu_seconds", ".0f"))


def _variant_overrides(items):
  out = {}
  for item in items:
    name, _, kv = item.partition(":")
    if name not in VARIANTS or not kv:
      raise SystemExit(f"--set-variant {item!r}: expected VARIANT:KEY=VALUE with VARIANT in "
                       f"{', '.join(VARIANTS)}")
    out.setdefault(name, []).append(parse_override(kv))
  return out


def _steps_to_target(r):
  s = r.get("target_reached_at_step")
  return "–" if r.get("method") != "cmt" else ("never" if s is None else str(s + 1))


def write_table(rows, dims, variants):
  header = ["d", "variant", "modes covered (per seed)", "mode TV", "mode TV reweighted",
            "abs log Z error", "reverse ESS", "target evals", "steps to target", "wall s",
            "CPU s"]
  cells = []
  for d in dims:
    for name in variants:
      rs = [r for r in rows if r["dim"] == d and r["variant"] == name]
      if not rs:
        continue
      cols = MEAN_COLUMNS + SECONDS_COLUMNS
      s = grid.summarise(rs, [k for k, _ in cols], keep_nan=True)  # a nan shows as nan
      means = {k: grid.format_mean_se(s.get(k), spec) for k, spec in cols}
      cells.append([d, name, ", ".join(f"{r['modes_covered']}/{r['n_modes']}" for r in rs),
                    *(means[k] for k, _ in MEAN_COLUMNS),
                    f"{max(r['target_evals'] for r in rs):.3g}",
                    ", ".join(_steps_to_target(r) for r in rs),
                    *(means[k] for k, _ in SECONDS_COLUMNS)])
  return "\n".join(grid.md_table(header, cells))


def plot_summary(path, rows, dims, variants, title):
  """Final figures of every path side by side: one marker per seed, one colour per dimension."""
  panels = [("modes_covered", "modes covered (of 16)", False),
            ("mode_tv", "mode occupancy TV", False),
            ("abs_log_z_error", "|log Z error|", True),
            ("reverse_ess", "reverse ESS", False)]
  fig, axes = plt.subplots(1, 4, figsize=(18, 4.6))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  width = 0.8 / max(len(dims), 1)
  for ax, (key, label, log) in zip(axes, panels):
    for j, d in enumerate(dims):
      for i, name in enumerate(variants):
        rs = [r for r in rows if r["dim"] == d and r["variant"] == name]
        if not rs:
          continue
        vals = [abs(r["log_z_error"]) if key == "abs_log_z_error" else r[key] for r in rs]
        x = i + (j - (len(dims) - 1) / 2) * width
        ax.bar(x, np.mean(vals), width=width * 0.9, color=colors[j % len(colors)], alpha=0.45,
               label=f"d = {d}" if i == 0 else None)
        ax.scatter(np.full(len(vals), x), vals, color=colors[j % len(colors)], s=14,
                   zorder=3, edgecolors="k", linewidths=0.4)
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
    ax.set_title(label, fontsize=10)
    if log:
      ax.set_yscale("log")
    if key == "modes_covered":
      ax.axhline(16, color="k", lw=0.6, ls=":")
      ax.set_ylim(0, 17)
    if key == "reverse_ess":
      ax.set_ylim(0, 1)
  axes[0].legend(fontsize=8)
  return plots.save_figure(fig, path, title)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dims", nargs="*", type=int, default=[5, 10])
  ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
  ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
  ap.add_argument("--budget", type=float, default=1e6, help="target evaluations per run")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override applied to every run (e.g. cmt.eps_ent=0.5)")
  ap.add_argument("--set-variant", action="append", default=[], metavar="VARIANT:KEY=VALUE",
                  help="config override of one variant "
                       "(e.g. reverse_kl:reverse_kl.learning_rate=3e-4)")
  ap.add_argument("--name", default="ablation", help="stem of the result files and run folders")
  ap.add_argument("--skip-done", action="store_true",
                  help="reuse finished runs with the same config instead of running them again")
  ap.add_argument("--no-plots", action="store_true")
  ap.add_argument("--out", default="benchmarks/results")
  ap.add_argument("--runs", default="runs/ablation")
  ap.add_argument("--jobs", type=int, default=1,
                  help="runs at a time, each in its own process pinned to a share of the CPUs "
                       "(1: one after the other in this process)")
  args = ap.parse_args(argv)
  unknown = [v for v in args.variants if v not in VARIANTS]
  if unknown:
    raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
  overrides = [parse_override(s) for s in args.set]
  per_variant = _variant_overrides(args.set_variant)
  os.makedirs(args.out, exist_ok=True)
  variants = [v for v in VARIANTS if v in args.variants]
  if "fixed_geometric" in variants and "cmt" not in variants:
    print("note: fixed_geometric without cmt uses 20 schedule steps", flush=True)

  def variant(name: str, schedule_steps=None) -> grid.Variant:
    """The variant's layer (with its schedule steps), then --set, then --set-variant."""
    layer = VARIANTS[name]
    if schedule_steps is not None:
      layer = grid.merge(layer, {"cmt": {"schedule_steps": int(schedule_steps)}})
    return grid.Variant(name, (layer, *overrides, *per_variant.get(name, [])))

  # fixed_geometric takes as many schedule steps as the cmt run of its dimension and seed.
  tasks = [(d, seed, name) for d in args.dims for seed in args.seeds for name in variants]
  waits = {(d, seed, "fixed_geometric"): (d, seed, "cmt") for d, seed, _ in tasks}
  cmt_steps: dict[tuple[int, int], int] = {}
  schedule_steps: dict[tuple, int] = {}
  finished: dict[tuple, dict] = {}

  def prepare(task) -> grid.Job:
    d, seed, name = task
    steps = None
    if name == "fixed_geometric":
      steps = schedule_steps[task] = int(cmt_steps.get((d, seed)) or 20)
    cfg = variant(name, steps).config("gmm16", {
        "target": "gmm16", "target_kwargs": {"dim": d}, "seed": seed,
        "max_target_evals": int(args.budget)})
    folder = os.path.join(args.runs, args.name, f"d{d}_s{seed}_{name}")
    return grid.Job(cfg, folder, args.skip_done and grid.finished_with(folder, cfg))

  for done in grid.run_grid(tasks, prepare, workers=args.jobs if args.jobs > 1 else 0,
                            after=waits, progress=True):
    (d, seed, name), folder, m = done.key, done.job.out, done.metrics
    if "error" in m:
      raise SystemExit(f"ablation.py: run {folder} failed: {m['error']}")
    if done.reused:
      print(f"reusing {folder}", flush=True)
    else:
      m.update(total_seconds=done.wall_seconds, cpu_seconds=done.cpu_seconds)
      grid.write_metrics(folder, m)
    m.update(variant=name, dim=d, folder=folder)
    if name == "cmt":
      cmt_steps[(d, seed)] = grid.anneal_steps(m)
    if name == "fixed_geometric":
      m["schedule_steps"] = schedule_steps[done.key]
    finished[done.key] = m
    rows = [finished[t] for t in tasks if t in finished]  # grid order, however runs finish
    print(json.dumps({k: m.get(k) for k in (
        "variant", "dim", "seed", "modes_covered", "mode_tv", "log_z_error", "reverse_ess",
        "target_evals", "target_reached_at_step", "total_seconds", "cpu_seconds")}),
          flush=True)
    grid.write_json(os.path.join(args.out, f"{args.name}.json"), rows)

  rows = [finished[t] for t in tasks if t in finished]
  table = write_table(rows, args.dims, variants)
  with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
    f.write(f"GMM-16, budget {args.budget:.3g} target evaluations per run, seeds {args.seeds}, "
            f"overrides {args.set}, per-variant overrides {args.set_variant}. Mean ± s.e. over "
            f"seeds; wall and CPU seconds per run (training, compile and evaluation; niced on "
            f"a shared 2-core machine).\n\n{table}\n")
  print(table)
  if args.no_plots:
    return
  plot_summary(os.path.join(args.out, f"{args.name}_summary.png"), rows, args.dims, variants,
               f"GMM-16 ablation at {args.budget:.2g} target evaluations per run "
               f"(bars: mean, dots: seeds {args.seeds})")
  for d in args.dims:
    curves = {}
    for name in variants:
      if name == "reverse_kl":
        continue
      curves[name] = grid.load_jsonl(os.path.join(args.runs, args.name,
                                                  f"d{d}_s{args.seeds[0]}_{name}",
                                                  "steps.jsonl"))
    plots.plot_ablation(os.path.join(args.out, f"{args.name}_d{d}.png"), curves,
                        title=f"GMM-16 in {d}-D (seed {args.seeds[0]}): per-step view of each path")


if __name__ == "__main__":
  main()
