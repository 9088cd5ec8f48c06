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
  reverse_kl        reverse KL

Run by hand (one command; minutes per run on 2 CPU cores):

  .venv/bin/python benchmarks/ablation.py --dims 5 10 --seeds 0 1
  .venv/bin/python benchmarks/ablation.py --dims 10 --seeds 0 --budget 2e6 --set cmt.n_samples=20000

Writes benchmarks/results/ablation.json, ablation.md (table: modes covered — a mode counts when
it holds at least a quarter of its true share —, occupancy TV, |log Z error|, reverse ESS) and
ablation_d{d}.png (per-step curves of every variant side by side), and each run's folder under
runs/ablation/.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from cmtjax.io import plots
from cmtjax.io.config import build_config, parse_override
from cmtjax.io.presets import preset_for
from cmtjax.runner import run

VARIANTS = {
    "cmt": {"method": "cmt", "cmt": {"path": "geometric_tempered"}},
    "trust_region_only": {"method": "cmt", "cmt": {"path": "geometric"}},
    "entropy_only": {"method": "cmt", "cmt": {"path": "tempered"}},
    "none": {"method": "cmt", "cmt": {"path": "none"}},
    "fixed_geometric": {"method": "cmt", "cmt": {"schedule": "linear_beta"}},
    "reverse_kl": {"method": "reverse_kl"},
}


def _load_steps(folder):
  path = os.path.join(folder, "steps.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f]


def _mean_se(values):
  v = np.asarray([x for x in values if x is not None], float)
  if v.size == 0:
    return "–"
  se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
  return f"{v.mean():.3g} ± {se:.2g}"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--dims", nargs="*", type=int, default=[5, 10])
  ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
  ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
  ap.add_argument("--budget", type=float, default=1e6, help="target evaluations per run")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override applied to every run (e.g. cmt.eps_ent=0.5)")
  ap.add_argument("--out", default="benchmarks/results")
  ap.add_argument("--runs", default="runs/ablation")
  args = ap.parse_args()
  overrides = [parse_override(s) for s in args.set]
  os.makedirs(args.out, exist_ok=True)
  variants = [v for v in VARIANTS if v in args.variants]
  if "fixed_geometric" in variants and "cmt" in variants:  # needs the CMT run's step count
    variants.remove("cmt")
    variants.insert(0, "cmt")
  rows = []
  for d in args.dims:
    for seed in args.seeds:
      cmt_steps = None
      for name in variants:
        layer = json.loads(json.dumps(VARIANTS[name]))
        if name == "fixed_geometric":
          layer["cmt"]["schedule_steps"] = int(cmt_steps or 20)
        cfg = build_config([preset_for("gmm16"), layer, *overrides, {
            "target": "gmm16", "target_kwargs": {"dim": d}, "seed": seed,
            "max_target_evals": int(args.budget)}])
        folder = os.path.join(args.runs, f"d{d}_s{seed}_{name}")
        t0 = time.perf_counter()
        m = run(cfg, folder, progress=True)
        m.update(variant=name, dim=d, folder=folder, total_seconds=time.perf_counter() - t0)
        if name == "cmt":
          reached = m.get("target_reached_at_step")
          cmt_steps = (reached + 1) if reached is not None else m["n_steps"]
        if name == "fixed_geometric":
          m["schedule_steps"] = layer["cmt"]["schedule_steps"]
        rows.append(m)
        print(json.dumps({k: m.get(k) for k in (
            "variant", "dim", "seed", "modes_covered", "mode_tv", "log_z_error", "reverse_ess",
            "wall_seconds", "target_evals")}), flush=True)
        with open(os.path.join(args.out, "ablation.json"), "w") as f:
          json.dump(rows, f, indent=2)

  lines = ["| d | variant | modes covered (per seed) | mode TV | mode TV reweighted | "
           "abs log Z error | reverse ESS | target evals | wall s |",
           "|---|---|---|---|---|---|---|---|---|"]
  for d in args.dims:
    for name in variants:
      rs = [r for r in rows if r["dim"] == d and r["variant"] == name]
      if not rs:
        continue
      modes = ", ".join(f"{r['modes_covered']}/{r['n_modes']}" for r in rs)
      lines.append(
          f"| {d} | {name} | {modes} | {_mean_se([r['mode_tv'] for r in rs])} | "
          f"{_mean_se([r['mode_tv_reweighted'] for r in rs])} | "
          f"{_mean_se([abs(r['log_z_error']) for r in rs])} | "
          f"{_mean_se([r['reverse_ess'] for r in rs])} | {rs[0]['target_evals']:.3g} | "
          f"{_mean_se([r['wall_seconds'] for r in rs])} |")
  table = "\n".join(lines)
  with open(os.path.join(args.out, "ablation.md"), "w") as f:
    f.write(f"GMM-16, budget {args.budget:.3g} target evaluations per run, seeds "
            f"{args.seeds}, overrides {args.set}.\n\n{table}\n")
  print(table)

  for d in args.dims:
    curves = {}
    for name in variants:
      if name == "reverse_kl":
        continue
      folder = os.path.join(args.runs, f"d{d}_s{args.seeds[0]}_{name}")
      curves[name] = _load_steps(folder)
    plots.plot_ablation(os.path.join(args.out, f"ablation_d{d}.png"), curves,
                        title=f"GMM-16 in {d}-D (seed {args.seeds[0]}): per-step view of each path")


if __name__ == "__main__":
  main()
