"""Budget-matched comparison of training methods on one target (a table like the paper's Table 1).

Every run goes through :func:`cmtjax.runner.run` (the one loop, the same flow preset, the same
budget of target evaluations, the same evaluation), each in its own folder. A method is given
as a spec ``name[:key=value[,key=value…]]``; keys without a dot belong to the method's config
section, dotted keys are full config paths:

  cmt  reverse_kl  fab  tabg  forward_kl  smc
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
TV, or for molecules the Ramachandran TV (plain and reweighted) and the wrong-chirality rate),
``compare_<target>.png`` (reverse ESS against target evaluations, mean ± s.e. over seeds,
on a linear and a log scale) and ``compare_<target>_time.png`` (the same against training
wall time; comparable between runs made on one machine under the same load) in
``--results-dir``, and each run's folder under ``--runs-dir/<target>/<method>/seed<k>``.
``--resume`` reuses runs
whose ``metrics.json`` exists and continues interrupted ones from their newest checkpoint (a
long table can be finished in several sittings, losing at most one checkpoint interval);
``--report-only`` runs nothing and writes the table and plot of the finished runs.
``--merge earlier/compare_<target>.json`` adds the rows of an earlier comparison of the same
target and budget for the methods not run now (rows made in another sitting or on another
machine; the table names where each merged row came from).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grid  # noqa: E402
from grid import ABS_OF, mean_se, run_label  # noqa: E402,F401  (part of this script's API)

from cmtjax.io.config import parse_override  # noqa: E402
from cmtjax.train import plan_steps  # noqa: E402

# (metric key, column title, format); columns absent from every run are left out.
COLUMNS = (
    ("target_evals", "target evals", ".3g"),
    ("grad_steps", "grad steps", ".3g"),
    ("training_seconds", "training s", ".3g"),
    ("reverse_ess", "reverse ESS %", "pct"),
    ("reverse_ess_clipped", "clipped ESS %", "pct"),
    # A particle sampler (smc) has no model density: the ESS of its final particles' weights
    # (1 once it has resampled at the target) and that of its weights on reaching the target.
    ("particle_ess", "particle ESS %", "pct"),
    ("smc_ess_at_target", "particle ESS at β = 1 %", "pct"),
    ("log_z", "log Z", ".5g"),
    ("eubo", "EUBO", ".4g"),
    ("abs_log_z_error", "abs log Z error", ".2g"),
    ("abs_ais_log_z_error", "AIS abs log Z error", ".2g"),
    ("modes_covered", "modes covered", ".3g"),
    ("mode_tv", "mode TV", ".2g"),
    ("well_occupancy_tv", "well TV", ".2g"),
    ("forward_ess", "forward ESS %", "pct"),
    ("ramachandran_tv", "Ram TV", ".2g"),
    ("ramachandran_tv_reweighted", "Ram TV reweighted", ".2g"),
    # Noise floors beside the figures: the same TV between two halves of the reference and
    # between two halves of the model sample (cmtjax.metrics.ramachandran_divergences).
    ("ramachandran_tv_floor_reference", "Ram TV floor: ref halves", ".2g"),
    ("ramachandran_tv_floor_model", "Ram TV floor: model halves", ".2g"),
    ("ramachandran_tv_36", "Ram TV 36²", ".2g"),
    ("ramachandran_tv_36_floor_reference", "36² floor: ref halves", ".2g"),
    ("ramachandran_tv_36_floor_model", "36² floor: model halves", ".2g"),
    ("energy_w1_reweighted", "energy W1 reweighted", ".2g"),
    # Model energies capped at the reference's highest (exploded samples then count by their
    # share, not by how far they went) and that share.
    ("energy_w1_capped", "energy W1 capped", ".2g"),
    ("energy_above_reference_fraction", "above ref. energies", ".2g"),
    ("chirality_error_rate", "wrong chirality", ".2g"),
    # Configurations with a cis peptide bond: the reweighted model beside the reference.
    ("cis_peptide_fraction_reweighted", "cis peptide reweighted", ".2g"),
    ("cis_peptide_fraction_reference", "cis peptide ref.", ".2g"),
)
SUMMARY_KEYS = tuple(c[0] for c in COLUMNS) + ("log_z_error", "ais_log_z_error",
                                                "compile_seconds", "n_steps")
# Per backbone pair (peptides with several residues): Ramachandran TV on 36x36 bins, plain and
# reweighted, with the same two noise floors; kept in each run's row as lists (one value per
# pair) and tabled below the main table.
PER_PAIR_KEYS = ("ramachandran_tv_36_per_pair", "ramachandran_tv_reweighted_36_per_pair",
                 "ramachandran_tv_36_floor_reference_per_pair",
                 "ramachandran_tv_36_floor_model_per_pair")
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
    layer = grid.merge(layer, parse_override(f"{path}={value}"))
  return name, layer


def summarise(runs: list[dict]) -> dict:
  """Mean ± s.e. over seeds of every summary metric of the successful runs."""
  ok = [r for r in runs if "error" not in r]
  out = grid.summarise(ok, SUMMARY_KEYS, abs_of=ABS_OF)
  n_modes = {r.get("n_modes") for r in ok} - {None}
  if n_modes:
    out["n_modes"] = max(n_modes)
  for key in PER_PAIR_KEYS:  # element-wise over seeds, for runs with the same pairs
    lists = [r[key] for r in ok if isinstance(r.get(key), list)]
    if lists and len({len(v) for v in lists}) == 1:
      out[key] = [grid.mean_se(column) for column in zip(*lists)]
  out["n_runs"], out["n_failed"] = len(ok), len(runs) - len(ok)
  return out


def per_pair_table(summaries: dict[str, dict]) -> list[str]:
  """Markdown lines of the per-pair Ramachandran TV (36²) table; none for one pair."""
  n_pairs = max((len(s.get(PER_PAIR_KEYS[0], [])) for s in summaries.values()), default=0)
  if n_pairs < 2:
    return []
  plain, reweighted, floor_ref, floor_model = PER_PAIR_KEYS
  rows = []
  for label, s in summaries.items():
    if len(s.get(plain, [])) != n_pairs:
      rows.append([label, *["–"] * n_pairs])
      continue
    fig = lambda key, i: (_fmt(s[key][i], ".2g") if len(s.get(key, [])) == n_pairs else "–")
    rows.append([label, *(f"{fig(plain, i)} / {fig(reweighted, i)} "
                          f"({fig(floor_ref, i)}, {fig(floor_model, i)})"
                          for i in range(n_pairs))])
  return ["", "Per backbone pair: Ramachandran TV on 36² bins, plain / reweighted (noise "
          "floors: reference halves, model halves).", "",
          *grid.md_table(["method", *(f"pair {i + 1}" for i in range(n_pairs))], rows)]


def _fmt(s, fmt: str) -> str:
  if fmt == "pct":
    return grid.format_mean_se(s, ".3g", scale=100)
  return grid.format_mean_se(s, fmt)


def markdown_table(target: str, summaries: dict[str, dict], budget: float,
                   seeds: list[int]) -> str:
  """The Markdown table: one row per method, mean ± s.e. over seeds."""
  cols = [c for c in COLUMNS if any(c[0] in s for s in summaries.values())]
  rows = []
  for label, s in summaries.items():
    cells = []
    for key, _, fmt in cols:
      cell = _fmt(s.get(key), fmt)
      if key == "modes_covered" and cell != "–" and s.get("n_modes"):
        cell += f" / {s['n_modes']}"
      cells.append(cell)
    runs = f"{s['n_runs']}" + (f" ({s['n_failed']} failed)" if s["n_failed"] else "")
    rows.append([label, runs, *cells])
  lines = [f"# {target}: methods at a matched budget of {budget:.3g} target evaluations",
           "", f"Seeds {seeds}; mean ± standard error over seeds (no ± for a single seed). "
           "Reverse ESS: median of the evaluation's repeats per run. Modes covered: a mode "
           "counts when it holds at least a quarter of its true share. A run stops at the "
           "last whole outer step within the budget, so its target evaluations can fall "
           "short of it by less than one step's cost." + (
               " Particle ESS (smc, a particle sampler without a model density, so reverse "
               "ESS, EUBO and forward ESS do not apply): the ESS of its final particles' "
               "weights (100 % once the rounds at the target have resampled them) and, at "
               "β = 1, of the weights with which the annealing arrived there; its molecular "
               "figures are those of the weighted particles."
               if any(c[0] == "particle_ess" for c in cols) else ""), "",
           *grid.md_table(["method", "runs", *(c[1] for c in cols)], rows),
           *per_pair_table(summaries)]
  return "\n".join(lines) + "\n"


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
  ap.add_argument("--resume", action="store_true",
                  help="reuse runs with a metrics.json and continue interrupted ones from "
                       "their checkpoints")
  ap.add_argument("--no-progress", action="store_true")
  ap.add_argument("--eval-points", type=int, default=10,
                  help="in-training evaluations per run for the ESS curve (eval.every is set "
                       "per method from its number of steps; 0: keep the config's eval.every)")
  ap.add_argument("--report-only", action="store_true",
                  help="run nothing: write the table and plot from the runs in --runs-dir that "
                       "have a metrics.json (e.g. while a long table is still running)")
  ap.add_argument("--merge", action="append", default=[], metavar="COMPARE.json",
                  help="add the runs of an earlier comparison of the same target and budget "
                       "(a compare_<target>.json) for the methods this invocation does not "
                       "run, e.g. rows made on another machine or in another sitting; "
                       "repeatable")
  ap.add_argument("--jobs", type=int, default=1,
                  help="runs in parallel, each in its own process pinned to a share of the "
                       "CPUs (their wall times then compare with each other only)")
  args = ap.parse_args(argv)

  specs = list(dict.fromkeys(args.methods))
  parsed = {s: parse_spec(s) for s in specs}
  overrides = [parse_override(s) for s in args.set]
  # Each spec's layer goes over the --set overrides; its method over both.
  variants = {s: grid.Variant(s, (*overrides, layer, {"method": name}))
              for s, (name, layer) in parsed.items()}
  fixed = {s for s in specs if _is_fixed_schedule(parsed[s])}
  # Plain CMT first: fixed schedules take their number of annealing steps from it.
  specs.sort(key=lambda s: 0 if s == "cmt" else 1)
  base = {"target": args.target, "max_target_evals": int(args.budget)}
  one_step = {"cmt": {"schedule_steps": 1}}  # a placeholder until the step count is known
  for spec in specs:  # validate every config before the first (long) run
    cfg = variants[spec].config(args.target, one_step if spec in fixed else {},
                                {**base, "seed": args.seeds[0]})
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
  merged = _merge(args.merge, args.target, int(args.budget), specs)
  results["methods"].update(merged)
  cmt_anneal_steps: dict[int, int] = {}
  collected: dict[tuple[str, int], dict] = {}
  notes: dict[tuple[str, int], dict] = {}

  def folder(spec: str, seed: int) -> str:
    return os.path.join(args.runs_dir, args.target, run_label(spec), f"seed{seed}")

  def prepare(task: tuple[str, int]) -> grid.Job:
    """The run's job and notes (a fixed schedule takes its step count from plain cmt)."""
    spec, seed = task
    variant, run_layer, note = variants[spec], {**base, "seed": seed}, {}
    if spec in fixed:
      steps = cmt_anneal_steps.get(seed)
      if steps is None:
        cfg0 = variant.config(args.target, one_step, run_layer)
        steps = max(1, int(args.budget) // cfg0.method_config.n_samples // 2)
        note["schedule_steps_from"] = "half the planned steps (no plain cmt run)"
      else:
        note["schedule_steps_from"] = "steps of the plain cmt run to reach the target"
      run_layer["cmt"] = {"schedule_steps": int(steps)}
      note["schedule_steps"] = int(steps)
    cfg = variant.config(args.target, run_layer)
    if args.eval_points > 0:  # every method's ESS curve gets about the same number of points
      n_steps = plan_steps(cfg.method_config.evals_per_step, cfg.max_target_evals,
                           cfg.max_steps)
      run_layer["eval"] = {"every": max(1, n_steps // args.eval_points)}
      cfg = variant.config(args.target, run_layer)
    job = grid.resumable_job(cfg, folder(spec, seed), args.resume)
    if job.reuse:
      note["reused"] = True
    elif job.resume:
      note["continued_from_checkpoint"] = True
    notes[task] = note
    return job

  def record(done: grid.Finished) -> None:
    (spec, seed), note = done.key, notes[done.key]
    m = grid.flat_metrics(done.metrics)  # wall-clock figures next to the results in the table
    m.update({k: done.metrics[k] for k in PER_PAIR_KEYS
              if isinstance(done.metrics.get(k), list)})
    seconds = done.wall_seconds
    if done.reused:  # the time the run took when it ran, not the time to read it back
      seconds = m.get("total_seconds", seconds)
    elif done.job.resume and "training_seconds" in m:  # continued in this sitting: its training
      # over every sitting (the checkpoint carries the clock) and this sitting's evaluation
      seconds = (m["training_seconds"] + m.get("eval_seconds", 0.0)
                 + m.get("molecular_eval_seconds", 0.0))
    m.update(note, folder=done.job.out, seconds=seconds)
    if spec == "cmt" and "error" not in m:
      cmt_anneal_steps[seed] = grid.anneal_steps(m)
    collected[(spec, seed)] = m
    for s_ in specs:  # the table keeps the order of methods and seeds however runs finish
      results["methods"][s_]["runs"] = [collected[(s_, k)] for k in args.seeds
                                        if (s_, k) in collected]
    print(json.dumps({k: m.get(k) for k in ("method", "seed", "reverse_ess", "log_z_error",
                                            "modes_covered", "mode_tv", "target_evals",
                                            "training_seconds", "error") if k in m}
                     | {"spec": spec}), flush=True)
    _write(results, stem)

  tasks = [(spec, seed) for spec in specs for seed in args.seeds]
  if args.report_only:  # reads metrics only: in this process, and nobody waits for a missing run
    args.resume, args.jobs = True, 1
    tasks = [t for t in tasks if grid.has_metrics(folder(*t))]
    print(f"report only: {len(tasks)} finished runs", flush=True)
  # A fixed schedule waits for the plain cmt run of its seed; one at a time, each seed's plain
  # cmt run comes first.
  waits = {t: ("cmt", t[1]) for t in tasks if t[0] in fixed}
  if args.jobs <= 1:
    tasks.sort(key=lambda t: (t[1], t[0] != "cmt"))
  t_all = time.perf_counter()
  for done in grid.run_grid(tasks, prepare, workers=args.jobs if args.jobs > 1 else 0,
                            after=waits, progress=not args.no_progress):
    record(done)
  results["total_seconds"] = time.perf_counter() - t_all  # this invocation
  results["run_seconds_sum"] = sum(  # every run, reused ones included
      r.get("seconds") or 0.0 for e in results["methods"].values() for r in e["runs"])
  _write(results, stem, final=True)
  print(f"wrote {stem}.json, .md, .png, _time.png")
  return 0


def _merge(paths: list[str], target: str, budget: int, specs: list[str]) -> dict:
  """The method entries of earlier comparisons (same target and budget) whose spec this
  invocation does not run; each run keeps its metrics and is marked ``merged_from``."""
  out: dict[str, dict] = {}
  for path in paths:
    try:
      with open(path) as f:
        earlier = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise SystemExit(f"compare.py: --merge {path}: {e}") from None
    if earlier.get("target") != target or int(earlier.get("budget", -1)) != budget:
      raise SystemExit(f"compare.py: --merge {path}: a comparison of "
                       f"{earlier.get('target')!r} at {earlier.get('budget')}, not of "
                       f"{target!r} at {budget}")
    for spec, entry in earlier.get("methods", {}).items():
      if spec in specs or spec in out or not entry.get("runs"):
        continue  # run here, merged already, or a row the earlier comparison never filled
      runs = [dict(r, merged_from=path) for r in entry.get("runs", [])]
      out[spec] = {"spec": spec, "overrides": entry.get("overrides", {}), "runs": runs,
                   "merged_from": path, "command": earlier.get("command")}
  return out


def _is_fixed_schedule(parsed_spec: tuple[str, dict]) -> bool:
  name, layer = parsed_spec
  cmt = layer.get("cmt", {})
  return (name == "cmt" and cmt.get("schedule") in FIXED_SCHEDULES
          and "schedule_steps" not in cmt)


def _curve(run: dict) -> list[dict]:
  """A run's in-training evaluations, ending with its final evaluation (which replaces the
  figure of an in-training evaluation at the same number of evaluations); each point carries
  the training wall time at its step (``training_seconds``, from ``steps.jsonl``; evaluations
  excluded, as in the run's own ``training_seconds``)."""
  folder = run.get("folder") or ""
  path = os.path.join(folder, "evals.jsonl")
  curve = grid.load_jsonl(path) if os.path.isfile(path) else []  # merged runs: final point
  steps_path = os.path.join(folder, "steps.jsonl")
  wall = {r["step"]: r["timing"]["wall_seconds"]
          for r in (grid.load_jsonl(steps_path) if os.path.isfile(steps_path) else [])
          if "step" in r and "wall_seconds" in r.get("timing", {})}
  curve = [dict(p, training_seconds=wall.get(p.get("step"))) for p in curve]
  last = curve[-1]["target_evals"] if curve else -1
  final = {"target_evals": run.get("target_evals"), "reverse_ess": run.get("reverse_ess"),
           "training_seconds": run.get("training_seconds")}
  if final["target_evals"] is None:
    return curve
  if final["target_evals"] > last:
    curve.append(final)
  elif final["target_evals"] == last and final["reverse_ess"] is not None:
    # An in-training evaluation at the last step scored the same flow as the final one, on
    # fewer samples: the curve ends at the final evaluation's figure, as the table does.
    curve[-1] = dict(curve[-1], reverse_ess=final["reverse_ess"])
  return curve


def _write(results: dict, stem: str, final: bool = False) -> None:
  for entry in results["methods"].values():
    entry["summary"] = summarise(entry["runs"])
  grid.write_json(stem + ".json", results)
  summaries = {s: e["summary"] for s, e in results["methods"].items() if e["runs"]}
  with open(stem + ".md", "w") as f:
    f.write(markdown_table(results["target"], summaries, results["budget"], results["seeds"]))
    f.write(f"\nCommand: `{results['command']}`\n")
    for spec, e in results["methods"].items():
      if e.get("merged_from"):
        f.write(f"\nRow {spec}: merged from {e['merged_from']} (command: "
                f"`{e.get('command')}`)\n")
  if final:
    curves = {s: [_curve(r) for r in e["runs"] if "error" not in r]
              for s, e in results["methods"].items()}
    from cmtjax.io.plots import plot_ess_vs_evals
    title = f"{results['target']}: reverse ESS during training (budget {results['budget']:.3g})"
    plot_ess_vs_evals(stem + ".png", curves, title)
    plot_ess_vs_evals(stem + "_time.png", curves, title, x_key="training_seconds",
                      x_label="training wall time, s (evaluations excluded)")


if __name__ == "__main__":
  sys.exit(main())
