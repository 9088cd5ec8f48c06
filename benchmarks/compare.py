"""Budget-matched comparison of training methods on one target (a table like the paper's Table 1).

Every run goes through :func:`cmtjax.runner.run` (the one loop, the same flow preset, the same
budget of target evaluations, the same evaluation), each in its own folder. A method is given
as a spec ``name[:key=value[,key=value…]]``; keys without a dot belong to the method's config
section, dotted keys are full config paths:

  cmt  reverse_kl  fab  tabg  forward_kl
  cmt:path=geometric          CMT ablations (trust region only; also tempered, none)
  cmt:schedule=linear_beta    fixed schedules (also geometric_beta, geometric_temperature)
  fab:n_leapfrog=10,flow.n_bins=16

A fixed schedule without ``schedule_steps`` gets as many annealing steps as the plain ``cmt``
run of the same seed took to reach the target (its ``target_reached_at_step`` + 1; all its
planned steps if it never did), so both follow their paths for the same number of steps at
the same budget; without a ``cmt`` run, half the planned steps.

  .venv/bin/python benchmarks/compare.py --target gmm40 --methods cmt reverse_kl fab tabg \
      cmt:path=geometric cmt:schedule=linear_beta --seeds 0 1 2 --budget 2e6 --jobs 2

``--jobs J`` runs J runs at a time, each in its own process pinned to a share of the CPUs
(a fixed schedule still waits for the plain cmt run of its seed). ``--eval-points P`` (default
10) sets each method's ``eval.every`` so that every ESS curve gets about P points, whatever
the method's cost per outer step; the curve ends with the run's final evaluation.

Writes ``compare_<target>.json`` (every run's metrics and the summaries), ``compare_<target>.md``
(mean ± standard error over seeds: target evaluations, gradient steps, wall time, reverse ESS,
EUBO, |log Z error| and FAB's own AIS |log Z error|, modes covered / mode TV or well-occupancy
TV, or for molecules the Ramachandran TV (plain and reweighted) and the wrong-chirality rate)
and ``compare_<target>.png`` (reverse ESS against target evaluations, mean ± s.e. over seeds,
on a linear and a log scale) in ``--results-dir``, and each run's folder under
``--runs-dir/<target>/<method>/seed<k>``. ``--resume`` reuses runs
whose ``metrics.json`` exists (a long table can be finished in several sittings);
``--report-only`` runs nothing and writes the table and plot of the finished runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import traceback
from typing import Any, Optional

import numpy as np

from cmtjax.io.config import build_config, parse_override
from cmtjax.io.presets import preset_for
from cmtjax.train import plan_steps

# (metric key, column title, format); columns absent from every run are left out.
COLUMNS = (
    ("target_evals", "target evals", ".3g"),
    ("grad_steps", "grad steps", ".3g"),
    ("training_seconds", "training s", ".3g"),
    ("reverse_ess", "reverse ESS %", "pct"),
    ("reverse_ess_clipped", "clipped ESS %", "pct"),
    ("eubo", "EUBO", ".4g"),
    ("abs_log_z_error", "abs log Z error", ".2g"),
    ("abs_ais_log_z_error", "AIS abs log Z error", ".2g"),
    ("modes_covered", "modes covered", ".3g"),
    ("mode_tv", "mode TV", ".2g"),
    ("well_occupancy_tv", "well TV", ".2g"),
    ("forward_ess", "forward ESS %", "pct"),
    ("ramachandran_tv", "Ram TV", ".2g"),
    ("ramachandran_tv_reweighted", "Ram TV reweighted", ".2g"),
    ("chirality_error_rate", "wrong chirality", ".2g"),
)
SUMMARY_KEYS = tuple(c[0] for c in COLUMNS) + ("log_z_error", "ais_log_z_error",
                                                "compile_seconds", "n_steps")
# Absolute-value columns and the signed metric each is taken from.
ABS_OF = {"abs_log_z_error": "log_z_error", "abs_ais_log_z_error": "ais_log_z_error"}
FIXED_SCHEDULES = ("linear_beta", "geometric_beta", "geometric_temperature")


def parse_spec(spec: str) -> tuple[str, dict]:
  """``"cmt:path=geometric,flow.n_bins=16"`` -> ``("cmt", {"cmt": {"path": …}, "flow": {…}})``."""
  name, _, rest = spec.partition(":")
  if not name:
    raise ValueError(f"empty method name in spec {spec!r}")
  layer: dict = {}
  for item in filter(None, (s.strip() for s in rest.split(","))):
    if "=" not in item:
      raise ValueError(f"spec {spec!r}: {item!r} must look like key=value")
    key, value = item.split("=", 1)
    path = key if "." in key else f"{name}.{key}"
    over = parse_override(f"{path}={value}")
    layer = _merge(layer, over)
  return name, layer


def _merge(a: dict, b: dict) -> dict:
  out = dict(a)
  for k, v in b.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def run_label(spec: str) -> str:
  """A folder-safe label of a spec."""
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec.replace(":", "__")).strip("_")


def mean_se(values) -> dict:
  """``{"mean", "se", "n"}`` of the finite values (se = std(ddof=1)/√n; 0 for one value)."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(float(x))], float)
  if v.size == 0:
    return {"mean": None, "se": None, "n": 0}
  se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
  return {"mean": float(v.mean()), "se": se, "n": int(v.size)}


def summarise(runs: list[dict]) -> dict:
  """Mean ± s.e. over seeds of every summary metric of the successful runs."""
  ok = [r for r in runs if "error" not in r]
  out = {}
  for key in SUMMARY_KEYS:
    vals = []
    for r in ok:
      v = r.get(key)
      if key in ABS_OF and r.get(ABS_OF[key]) is not None:
        v = abs(r[ABS_OF[key]])
      vals.append(v)
    s = mean_se(vals)
    if s["n"]:
      out[key] = s
  n_modes = {r.get("n_modes") for r in ok} - {None}
  if n_modes:
    out["n_modes"] = max(n_modes)
  out["n_runs"], out["n_failed"] = len(ok), len(runs) - len(ok)
  return out


def _fmt(s: Optional[dict], fmt: str) -> str:
  if not s or s.get("mean") is None:
    return "–"
  m, se = s["mean"], s["se"]
  if fmt == "pct":
    m, se = 100 * m, 100 * se
    fmt = ".3g"
  if s["n"] > 1:
    return f"{m:{fmt}} ± {se:.2g}"
  return f"{m:{fmt}}"


def markdown_table(target: str, summaries: dict[str, dict], budget: float,
                   seeds: list[int]) -> str:
  """The Markdown table: one row per method, mean ± s.e. over seeds."""
  cols = [c for c in COLUMNS if any(c[0] in s for s in summaries.values())]
  lines = [f"# {target}: methods at a matched budget of {budget:.3g} target evaluations",
           "", f"Seeds {seeds}; mean ± standard error over seeds (no ± for a single seed). "
           "Reverse ESS: median of the evaluation's repeats per run. Modes covered: a mode "
           "counts when it holds at least a quarter of its true share. A run stops at the "
           "last whole outer step within the budget, so its target evaluations can fall "
           "short of it by less than one step's cost.", "",
           "| method | runs | " + " | ".join(c[1] for c in cols) + " |",
           "|---|---|" + "---|" * len(cols)]
  for label, s in summaries.items():
    cells = []
    for key, _, fmt in cols:
      cell = _fmt(s.get(key), fmt)
      if key == "modes_covered" and cell != "–" and s.get("n_modes"):
        cell += f" / {s['n_modes']}"
      cells.append(cell)
    runs = f"{s['n_runs']}" + (f" ({s['n_failed']} failed)" if s["n_failed"] else "")
    lines.append(f"| {label} | {runs} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _load_jsonl(path: str) -> list[dict]:
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--target", default="gmm40")
  ap.add_argument("--methods", nargs="+", default=["cmt", "reverse_kl", "fab", "tabg"],
                  help="method specs, e.g. cmt reverse_kl fab tabg cmt:path=geometric")
  ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  ap.add_argument("--budget", type=float, default=2e6, help="target evaluations per run")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override for every run (e.g. eval.every=5); repeatable")
  ap.add_argument("--runs-dir", default="runs/compare")
  ap.add_argument("--results-dir", default="benchmarks/results")
  ap.add_argument("--resume", action="store_true", help="reuse runs with a metrics.json")
  ap.add_argument("--no-progress", action="store_true")
  ap.add_argument("--eval-points", type=int, default=10,
                  help="in-training evaluations per run for the ESS curve (eval.every is set "
                       "per method from its number of steps; 0: keep the config's eval.every)")
  ap.add_argument("--report-only", action="store_true",
                  help="run nothing: write the table and plot from the runs in --runs-dir that "
                       "have a metrics.json (e.g. while a long table is still running)")
  ap.add_argument("--jobs", type=int, default=1,
                  help="runs in parallel, each in its own process pinned to a share of the "
                       "CPUs (their wall times then compare with each other only)")
  args = ap.parse_args(argv)

  specs = list(dict.fromkeys(args.methods))
  parsed = {s: parse_spec(s) for s in specs}
  overrides = [parse_override(s) for s in args.set]
  # Plain CMT first: fixed schedules take their number of annealing steps from it.
  specs.sort(key=lambda s: 0 if s == "cmt" else 1)
  base = {"target": args.target, "max_target_evals": int(args.budget)}
  for spec in specs:  # validate every config before the first (long) run
    name, layer = parsed[spec]
    if layer.get("cmt", {}).get("schedule") in FIXED_SCHEDULES:
      layer = _merge({"cmt": {"schedule_steps": 1}}, layer)
    cfg = build_config([preset_for(args.target), *overrides, layer,
                        {**base, "method": name, "seed": args.seeds[0]}])
    try:
      plan_steps(cfg.method_config.evals_per_step, cfg.max_target_evals, cfg.max_steps)
    except ValueError as e:
      raise SystemExit(f"compare.py: method {spec!r}: {e}") from None
  os.makedirs(args.results_dir, exist_ok=True)
  stem = os.path.join(args.results_dir, f"compare_{args.target}")
  results: dict[str, Any] = {
      "target": args.target, "budget": int(args.budget), "seeds": args.seeds,
      "command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
      "methods": {s: {"spec": s, "overrides": parsed[s][1], "runs": []} for s in specs}}
  cmt_anneal_steps: dict[int, int] = {}
  collected: dict[tuple[str, int], dict] = {}

  def config_for(spec: str, seed: int):
    """The run's config and notes (a fixed schedule takes its step count from plain cmt)."""
    name, layer = parsed[spec]
    layer = json.loads(json.dumps(layer))
    note = {}
    if _is_fixed_schedule(parsed[spec]):
      steps = cmt_anneal_steps.get(seed)
      if steps is None:
        cfg0 = build_config([preset_for(args.target), *overrides,
                             _merge(layer, {"cmt": {"schedule_steps": 1}}),
                             {**base, "method": name, "seed": seed}])
        steps = max(1, int(args.budget) // cfg0.method_config.n_samples // 2)
        note["schedule_steps_from"] = "half the planned steps (no plain cmt run)"
      else:
        note["schedule_steps_from"] = "steps of the plain cmt run to reach the target"
      layer["cmt"]["schedule_steps"] = int(steps)
      note["schedule_steps"] = int(steps)
    cfg = build_config([preset_for(args.target), *overrides, layer,
                        {**base, "method": name, "seed": seed}])
    if args.eval_points > 0:  # every method's ESS curve gets about the same number of points
      n_steps = plan_steps(cfg.method_config.evals_per_step, cfg.max_target_evals,
                           cfg.max_steps)
      every = max(1, n_steps // args.eval_points)
      cfg = build_config([preset_for(args.target), *overrides, layer,
                          {**base, "method": name, "seed": seed, "eval": {"every": every}}])
    out = os.path.join(args.runs_dir, args.target, run_label(spec), f"seed{seed}")
    reuse = args.resume and os.path.isfile(os.path.join(out, "metrics.json"))
    if reuse:
      note["reused"] = True
    return cfg, out, note, reuse

  def record(spec: str, seed: int, m: dict, note: dict, out: str, seconds: float) -> None:
    m = {**m.get("timing", {}), **m}  # wall-clock figures next to the results in the table
    m = {k: v for k, v in m.items() if not isinstance(v, (list, dict))}
    if note.get("reused"):  # the time the run took when it ran, not the time to read it back
      seconds = m.get("total_seconds", seconds)
    m.update(note, folder=out, seconds=seconds)
    if spec == "cmt" and "error" not in m:
      reached = m.get("target_reached_at_step")
      cmt_anneal_steps[seed] = (reached + 1) if reached is not None else m.get("n_steps")
    collected[(spec, seed)] = m
    for s_ in specs:  # the table keeps the order of methods and seeds however runs finish
      results["methods"][s_]["runs"] = [collected[(s_, k)] for k in args.seeds
                                        if (s_, k) in collected]
    print(json.dumps({k: m.get(k) for k in ("method", "seed", "reverse_ess", "log_z_error",
                                            "modes_covered", "mode_tv", "target_evals",
                                            "training_seconds", "error") if k in m}
                     | {"spec": spec}), flush=True)
    _write(results, stem, args)

  # Plain cmt runs first; a fixed schedule waits for the plain cmt run of its seed.
  tasks = [(spec, seed) for spec in specs for seed in args.seeds]
  if args.report_only:  # reads metrics only: no workers, and nobody waits for a missing run
    args.resume, args.jobs = True, 1
    tasks = [t for t in tasks if os.path.isfile(os.path.join(
        args.runs_dir, args.target, run_label(t[0]), f"seed{t[1]}", "metrics.json"))]
    print(f"report only: {len(tasks)} finished runs", flush=True)
  waits = {t: ("cmt", t[1]) for t in tasks
           if t[0] != "cmt" and "cmt" in specs and _is_fixed_schedule(parsed[t[0]])}
  t_all = time.perf_counter()
  if args.jobs <= 1:
    for spec, seed in sorted(tasks, key=lambda t: (t[1], t[0] != "cmt")):
      cfg, out, note, reuse = config_for(spec, seed)
      t0 = time.perf_counter()
      m = _run_one(cfg, out, not args.no_progress, reuse)
      record(spec, seed, m, note, out,
             time.perf_counter() - t0)
  else:
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fresh JAX in every worker
    slot = ctx.Value("i", 0)
    with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_init_worker,
                                initargs=(slot, args.jobs)) as pool:
      running: dict = {}
      pending = list(tasks)

      def submit_ready():
        for t in list(pending):
          if t in waits and waits[t] not in collected:
            continue
          pending.remove(t)
          cfg, out, note, reuse = config_for(*t)
          running[pool.submit(_run_one, cfg, out, False, reuse)] = (
              t, out, note, time.perf_counter())

      submit_ready()
      while running:
        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for fut in done:
          (spec, seed), out, note, t0 = running.pop(fut)
          try:
            m = fut.result()
          except Exception as e:  # the worker itself died
            m = {"seed": seed, "error": f"{type(e).__name__}: {e}"}
          record(spec, seed, m, note, out, time.perf_counter() - t0)
        submit_ready()
  results["total_seconds"] = time.perf_counter() - t_all  # this invocation
  results["run_seconds_sum"] = sum(  # every run, reused ones included
      r.get("seconds") or 0.0 for e in results["methods"].values() for r in e["runs"])
  _write(results, stem, args, final=True)
  print(f"wrote {stem}.json, .md, .png")
  return 0


def _is_fixed_schedule(parsed_spec: tuple[str, dict]) -> bool:
  name, layer = parsed_spec
  cmt = layer.get("cmt", {})
  return (name == "cmt" and cmt.get("schedule") in FIXED_SCHEDULES
          and "schedule_steps" not in cmt)


def _init_worker(slot, n_jobs: int) -> None:
  """Pins each worker process to its own share of the CPUs, so parallel runs do not contend."""
  with slot.get_lock():
    index = slot.value
    slot.value += 1
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  if len(cpus) >= n_jobs:
    share = [c for i, c in enumerate(cpus) if i % n_jobs == index % n_jobs]
    os.sched_setaffinity(0, share)


def _run_one(cfg, out: str, progress: bool, reuse: bool) -> dict:
  """One run through the one loop (or its saved metrics); a failure becomes an error entry."""
  metrics_path = os.path.join(out, "metrics.json")
  try:
    if reuse:
      with open(metrics_path) as f:
        return json.load(f)
    from cmtjax.runner import run
    return run(cfg, out, progress=progress)
  except Exception as e:  # one failed run must not lose the table
    traceback.print_exc()
    return {"seed": cfg.seed, "error": f"{type(e).__name__}: {e}"}


def _curve(run: dict) -> list[dict]:
  """A run's in-training evaluations, ending with its final evaluation."""
  curve = _load_jsonl(os.path.join(run["folder"], "evals.jsonl"))
  last = curve[-1]["target_evals"] if curve else -1
  if run.get("target_evals") is not None and run["target_evals"] > last:
    curve.append({"target_evals": run["target_evals"], "reverse_ess": run.get("reverse_ess")})
  return curve


def _write(results: dict, stem: str, args, final: bool = False) -> None:
  for entry in results["methods"].values():
    entry["summary"] = summarise(entry["runs"])
  with open(stem + ".json", "w") as f:
    json.dump(results, f, indent=2)
  summaries = {s: e["summary"] for s, e in results["methods"].items() if e["runs"]}
  with open(stem + ".md", "w") as f:
    f.write(markdown_table(results["target"], summaries, results["budget"], results["seeds"]))
    f.write(f"\nCommand: `{results['command']}`\n")
  if final:
    curves = {s: [_curve(r) for r in e["runs"] if "error" not in r]
              for s, e in results["methods"].items()}
    from cmtjax.io.plots import plot_ess_vs_evals
    plot_ess_vs_evals(stem + ".png", curves, f"{results['target']}: reverse ESS during "
                      f"training (budget {results['budget']:.3g})")


if __name__ == "__main__":
  sys.exit(main())
