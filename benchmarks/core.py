"""Core figures of cmtjax: CMT on GMM-40 and Many-Well 32-D, reverse KL on GMM-40 for contrast.

Run by hand (minutes per run on 2 CPU cores):

  .venv/bin/python benchmarks/core.py                  # all runs
  .venv/bin/python benchmarks/core.py --only gmm40_cmt --seeds 0 1

Writes benchmarks/results/core.json and core.md (a table), and each run's folder under
runs/bench/ (metrics.json, steps.jsonl, plots).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax

from cmtjax.io.config import build_config
from cmtjax.io.presets import preset_for
from cmtjax.runner import run

RUNS = {
    # The README demo's configuration.
    "gmm40_cmt": ("gmm40", "cmt", {}),
    # Same flow and budget, reverse KL (mode-seeking: expect lost modes).
    "gmm40_reverse_kl": ("gmm40", "reverse_kl", {}),
    "many_well32_cmt": ("many_well32", "cmt", {}),
}

COLUMNS = ("target", "method", "seed", "target_evals", "grad_steps", "training_seconds",
           "reverse_ess", "reverse_ess_clipped", "log_z_error", "modes_covered", "n_modes",
           "mode_tv", "well_occupancy_tv", "eubo", "forward_ess")


def _fmt(v):
  if v is None:
    return "–"
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--only", nargs="*", default=list(RUNS))
  ap.add_argument("--seeds", nargs="*", type=int, default=[0])
  ap.add_argument("--out", default="benchmarks/results")
  ap.add_argument("--collect", action="store_true",
                  help="do not train: tabulate runs/bench/<run>_s<seed>/metrics.json")
  args = ap.parse_args()
  os.makedirs(args.out, exist_ok=True)
  rows = []
  for name in args.only:
    target, method, extra = RUNS[name]
    for seed in args.seeds:
      cfg = build_config([preset_for(target), extra, {"target": target, "method": method,
                                                      "seed": seed}])
      folder = f"runs/bench/{name}_s{seed}"
      if args.collect:
        if not os.path.isfile(os.path.join(folder, "metrics.json")):
          continue
        with open(os.path.join(folder, "metrics.json")) as f:
          m = json.load(f)
      else:
        t0 = time.perf_counter()
        m = run(cfg, folder, progress=True)
        m["total_seconds"] = time.perf_counter() - t0
      m.update(m.get("timing", {}))
      m["run"] = name
      rows.append(m)
      print(json.dumps({k: m.get(k) for k in ("run", *COLUMNS)}))
  meta = {"machine": platform.platform(), "cpu_count": os.cpu_count(),
          "jax": jax.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
  with open(os.path.join(args.out, "core.json"), "w") as f:
    json.dump({"meta": meta, "runs": rows}, f, indent=2)
  lines = ["| run | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
  for m in rows:
    lines.append(f"| {m['run']} | " + " | ".join(_fmt(m.get(c)) for c in COLUMNS) + " |")
  with open(os.path.join(args.out, "core.md"), "w") as f:
    f.write(f"Measured {meta['date']} on {meta['machine']} ({meta['cpu_count']} CPUs), "
            f"jax {meta['jax']}.\n\n" + "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
