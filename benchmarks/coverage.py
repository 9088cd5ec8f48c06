"""Mode coverage of one configuration over several target instances and training seeds.

A run counts as covering when it ends with every mode of the target and |log Z error| at most
``--tol`` (reverse ESS cannot see a missing mode; log Z can). Each target is given as a spec
``name[:key=v1/v2/...,key=...]``; a key with several values (``/``) expands to every
combination, so one spec can name a family of instances:

  .venv/bin/python benchmarks/coverage.py --targets gmm40:seed=0/1/2 gmm40_fab \
      --seeds 0 1 2 3 4 --jobs 2 --name gmm40
  .venv/bin/python benchmarks/coverage.py --targets gmm16:dim=5/8/10,seed=0/1/2 \
      --seeds 0 1 --jobs 2 --name gmm16

Every run uses the target's preset (``cmtjax/io/presets.py``) plus ``--set`` overrides and
``--budget``, goes through :func:`cmtjax.runner.run` in its own folder
(``--runs-dir/<name>/<instance>/seed<k>``) and reports modes covered, reverse ESS, log Z
error, mode-occupancy TV, target evaluations, steps to reach the target, wall and CPU seconds.
Writes ``coverage_<name>.json`` and ``coverage_<name>.md`` (one row per run, and how many
runs covered) to ``--results-dir``. ``--resume`` reuses finished runs and continues
interrupted ones from their checkpoints.

``--trace DIR [DIR ...]`` runs nothing: it plots, per annealing step of the given CMT run
folders, the buffer samples nearest to the least-sampled mode and β (``coverage_<name>.png``):

  .venv/bin/python benchmarks/coverage.py --name trace --trace runs/mechanism_A runs/mechanism_B
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grid  # noqa: E402

from cmtjax.io.config import parse_override  # noqa: E402


def expand_target(spec: str) -> list[tuple[str, str, dict]]:
  """``"gmm16:dim=5/8,seed=0"`` -> [(label, name, kwargs), ...], one per combination."""
  name, _, rest = spec.partition(":")
  if not name:
    raise ValueError(f"empty target name in spec {spec!r}")
  keys, choices = [], []
  for item in filter(None, (s.strip() for s in rest.split(","))):
    if "=" not in item:
      raise ValueError(f"target spec {spec!r}: {item!r} must look like key=value")
    key, values = item.split("=", 1)
    keys.append(key)
    choices.append([json.loads(v) if _is_json(v) else v for v in values.split("/")])
  out = []
  for combo in itertools.product(*choices):
    kwargs = dict(zip(keys, combo))
    label = name + "".join(f"_{k}{v}" for k, v in kwargs.items())
    out.append((label, name, kwargs))
  return out


def _is_json(text: str) -> bool:
  try:
    json.loads(text)
    return True
  except ValueError:
    return False


def covered(m: dict, tol: float) -> bool:
  """All modes found and |log Z error| <= tol."""
  return ("error" not in m and m.get("modes_covered") == m.get("n_modes")
          and m.get("log_z_error") is not None and abs(m["log_z_error"]) <= tol)


def markdown(results: dict) -> str:
  rows = results["runs"]
  lines = [f"# Mode coverage: {results['name']}", "",
           f"Passed (all modes, |log Z error| <= {results['tol']}): "
           f"**{sum(r['covered'] for r in rows)} / {len(rows)}** runs", "",
           *grid.md_table(["instance", "seed", "modes", "reverse ESS %", "log Z error",
                           "mode TV", "target evals", "target reached at step", "wall s",
                           "CPU s", "warnings"])]
  for r in rows:
    m = r["metrics"]
    if "error" in m:
      lines.append(grid.md_row([r["instance"], r["seed"], f"error: {m['error']}"]) + " |" * 9)
      continue
    wall = m.get("wall_seconds_run", m.get("timing", {}).get("total_seconds", 0))
    lines.append(grid.md_row([
        r["instance"], r["seed"], f"{m.get('modes_covered')}/{m.get('n_modes')}",
        f"{100 * m['reverse_ess']:.1f}", f"{m['log_z_error']:+.4f}",
        f"{m.get('mode_tv', 0):.3f}", f"{m['target_evals']:.3g}",
        m.get("target_reached_at_step"), f"{wall:.0f}",
        f"{m.get('cpu_seconds_run', float('nan')):.0f}", "; ".join(m.get("warnings", []))]))
  lines += ["", f"Command: `{results['command']}`", ""]
  return "\n".join(lines)


def plot_trace(path: str, run_dirs: list[str]) -> str:
  """Sparsest-mode buffer samples and β per step of CMT runs (their steps.jsonl)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from cmtjax.io.plots import save_figure
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
  for d in run_dirs:
    with open(os.path.join(d, "steps.jsonl")) as f:
      rec = [json.loads(line) for line in f]
    with open(os.path.join(d, "config.json")) as f:
      cmt = json.load(f)["cmt"]
    n = cmt["n_samples_annealing"] or cmt["n_samples"]
    label = f"{os.path.basename(os.path.normpath(d))}: N = {n:.0e} while annealing"
    steps = [r["step"] for r in rec]
    ax0.plot(steps, [max(r["sparsest_mode_samples"], 0.5) for r in rec], "o-", label=label)
    ax1.plot(steps, [r["beta"] for r in rec], "o-", label=label)
  ax0.set(yscale="log", xlabel="annealing step",
          ylabel="buffer samples nearest to the sparsest mode")
  ax1.set(xlabel="annealing step", ylabel="β")
  ax0.legend(fontsize=8)
  return save_figure(fig, path, "Coverage: how thinly the buffer samples its sparsest mode")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--targets", nargs="+", help="target specs (see above)")
  p.add_argument("--trace", nargs="+", metavar="DIR",
                 help="plot these CMT runs' steps; run nothing")
  p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
  p.add_argument("--name", required=True, help="name of the table (file stem)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override for every run (repeatable)")
  p.add_argument("--budget", type=float, help="max target evaluations (default: the preset's)")
  p.add_argument("--tol", type=float, default=0.02, help="largest |log Z error| that passes")
  p.add_argument("--jobs", type=int, default=1, help="runs at a time (one process each)")
  p.add_argument("--runs-dir", default="runs/coverage")
  p.add_argument("--results-dir", default="benchmarks/results")
  p.add_argument("--resume", action="store_true",
                 help="reuse runs with a metrics.json and continue interrupted ones from "
                      "their checkpoints")
  args = p.parse_args(argv)
  if args.trace:
    os.makedirs(args.results_dir, exist_ok=True)
    print(plot_trace(os.path.join(args.results_dir, f"coverage_{args.name}.png"), args.trace))
    return 0
  if not args.targets:
    p.error("--targets is required (or --trace)")

  setting = grid.Variant(args.name, tuple(parse_override(s) for s in args.set))  # --set
  jobs = {}
  for spec in args.targets:
    for label, name, kwargs in expand_target(spec):
      for seed in args.seeds:
        layer = {"target": name, "target_kwargs": kwargs, "method": "cmt", "seed": seed}
        if args.budget is not None:
          layer["max_target_evals"] = int(args.budget)
        cfg = setting.config(name, layer)  # checked before any run
        out = os.path.join(args.runs_dir, args.name, label, f"seed{seed}")
        jobs[(label, seed)] = grid.resumable_job(cfg, out, args.resume)

  os.makedirs(args.results_dir, exist_ok=True)
  stem = os.path.join(args.results_dir, f"coverage_{args.name}")
  results = {"name": args.name, "tol": args.tol, "runs": [],
             "command": "python benchmarks/coverage.py " + " ".join(argv or sys.argv[1:])}
  order = {key: i for i, key in enumerate(jobs)}

  # Every run in a worker process (one at a time with --jobs 1), so its CPU seconds are its own.
  for done in grid.run_grid(jobs, jobs.get, workers=max(args.jobs, 1)):
    (label, seed), m = done.key, done.metrics
    if done.cpu_seconds is not None:
      m["cpu_seconds_run"], m["wall_seconds_run"] = done.cpu_seconds, done.wall_seconds
    results["runs"].append({"instance": label, "seed": seed, "covered": covered(m, args.tol),
                            "metrics": m})
    results["runs"].sort(key=lambda r: order[(r["instance"], r["seed"])])
    print(f"{label} seed {seed}: modes {m.get('modes_covered')}/{m.get('n_modes')}, "
          f"log Z error {m.get('log_z_error')}, ESS {m.get('reverse_ess')}", flush=True)
    grid.write_json(stem + ".json", results)
    with open(stem + ".md", "w") as f:
      f.write(markdown(results))
  n_ok = sum(r["covered"] for r in results["runs"])
  print(f"covered: {n_ok} / {len(results['runs'])}; wrote {stem}.json, .md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
