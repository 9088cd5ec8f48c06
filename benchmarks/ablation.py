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
keys the library gained after the run are not compared).

Every row records the run's wall time and the CPU seconds of this process during the run
(user + system, all threads; compile and final evaluation included), so that a claim such as
"10 minutes on 2 cores" can be judged on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cmtjax.io import plots  # noqa: E402
from cmtjax.io.config import build_config, parse_override, to_dict  # noqa: E402
from cmtjax.io.presets import preset_for  # noqa: E402
from cmtjax.runner import run  # noqa: E402

VARIANTS = {
    "cmt": {"method": "cmt", "cmt": {"path": "geometric_tempered"}},
    "trust_region_only": {"method": "cmt", "cmt": {"path": "geometric"}},
    "entropy_only": {"method": "cmt", "cmt": {"path": "tempered"}},
    "none": {"method": "cmt", "cmt": {"path": "none"}},
    "fixed_geometric": {"method": "cmt", "cmt": {"schedule": "linear_beta"}},
    "reverse_kl": {"method": "reverse_kl", "reverse_kl": {"n_grad_steps": 10}},
}


def _load_steps(folder):
  path = os.path.join(folder, "steps.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f]


def _mean_se(values, fmt="{:.3g}"):
  v = np.asarray([x for x in values if x is not None], float)
  if v.size == 0:
    return "–"
  if v.size == 1:
    return fmt.format(v[0])
  se = v.std(ddof=1) / np.sqrt(v.size)
  return f"{fmt.format(v.mean())} ± {se:.2g}"


def _cpu_seconds():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _same_config(stored, current):
  """True when every key of ``stored`` has the same value in ``current``.

  Keys of ``current`` that ``stored`` lacks (settings added to the library after the run, at
  their defaults) are not compared.
  """
  if isinstance(stored, dict):
    return isinstance(current, dict) and all(
        k in current and _same_config(v, current[k]) for k, v in stored.items())
  return stored == current


def _finished(folder, cfg):
  """The stored metrics of a finished run of ``cfg`` in ``folder`` (else None)."""
  try:
    with open(os.path.join(folder, "config.json")) as f:
      stored = json.load(f)
    with open(os.path.join(folder, "metrics.json")) as f:
      metrics = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  return metrics if _same_config(stored, json.loads(json.dumps(to_dict(cfg)))) else None


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
  lines = ["| d | variant | modes covered (per seed) | mode TV | mode TV reweighted | "
           "abs log Z error | reverse ESS | target evals | steps to target | wall s | CPU s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for d in dims:
    for name in variants:
      rs = [r for r in rows if r["dim"] == d and r["variant"] == name]
      if not rs:
        continue
      modes = ", ".join(f"{r['modes_covered']}/{r['n_modes']}" for r in rs)
      lines.append(
          f"| {d} | {name} | {modes} | {_mean_se([r['mode_tv'] for r in rs])} | "
          f"{_mean_se([r['mode_tv_reweighted'] for r in rs])} | "
          f"{_mean_se([abs(r['log_z_error']) for r in rs])} | "
          f"{_mean_se([r['reverse_ess'] for r in rs])} | "
          f"{max(r['target_evals'] for r in rs):.3g} | "
          f"{', '.join(_steps_to_target(r) for r in rs)} | "
          f"{_mean_se([r['total_seconds'] for r in rs], '{:.0f}')} | "
          f"{_mean_se([r.get('cpu_seconds') for r in rs], '{:.0f}')} |")
  return "\n".join(lines)


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


def main():
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
  args = ap.parse_args()
  unknown = [v for v in args.variants if v not in VARIANTS]
  if unknown:
    raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
  overrides = [parse_override(s) for s in args.set]
  per_variant = _variant_overrides(args.set_variant)
  os.makedirs(args.out, exist_ok=True)
  variants = [v for v in VARIANTS if v in args.variants]
  if "fixed_geometric" in variants and "cmt" not in variants:
    print("note: fixed_geometric without cmt uses 20 schedule steps", flush=True)
  rows = []
  for d in args.dims:
    for seed in args.seeds:
      cmt_steps = None
      for name in variants:
        layer = json.loads(json.dumps(VARIANTS[name]))
        if name == "fixed_geometric":
          layer["cmt"]["schedule_steps"] = int(cmt_steps or 20)
        cfg = build_config([preset_for("gmm16"), layer, *overrides, *per_variant.get(name, []), {
            "target": "gmm16", "target_kwargs": {"dim": d}, "seed": seed,
            "max_target_evals": int(args.budget)}])
        folder = os.path.join(args.runs, args.name, f"d{d}_s{seed}_{name}")
        m = _finished(folder, cfg) if args.skip_done else None
        if m is None:
          t0, c0 = time.perf_counter(), _cpu_seconds()
          m = run(cfg, folder, progress=True)
          m.update(total_seconds=time.perf_counter() - t0, cpu_seconds=_cpu_seconds() - c0)
          with open(os.path.join(folder, "metrics.json"), "w") as f:
            json.dump(m, f, indent=2)
        else:
          print(f"reusing {folder}", flush=True)
        m.update(variant=name, dim=d, folder=folder)
        if name == "cmt":
          reached = m.get("target_reached_at_step")
          cmt_steps = (reached + 1) if reached is not None else m["n_steps"]
        if name == "fixed_geometric":
          m["schedule_steps"] = layer["cmt"]["schedule_steps"]
        rows.append(m)
        print(json.dumps({k: m.get(k) for k in (
            "variant", "dim", "seed", "modes_covered", "mode_tv", "log_z_error", "reverse_ess",
            "target_evals", "target_reached_at_step", "total_seconds", "cpu_seconds")}),
              flush=True)
        with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
          json.dump(rows, f, indent=2)

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
      curves[name] = _load_steps(os.path.join(args.runs, args.name,
                                              f"d{d}_s{args.seeds[0]}_{name}"))
    plots.plot_ablation(os.path.join(args.out, f"{args.name}_d{d}.png"), curves,
                        title=f"GMM-16 in {d}-D (seed {args.seeds[0]}): per-step view of each path")


if __name__ == "__main__":
  main()
