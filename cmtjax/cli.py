"""The ``cmtjax`` command.

  cmtjax train --target gmm40 --method cmt --seed 0 --out runs/demo
  cmtjax train --config experiments/gmm40_cmt.toml --set cmt.eps_ent=0.8 --out runs/x
  cmtjax train --config runs/demo/config.json --out runs/demo-again     (repeat a run)
  cmtjax train --resume runs/demo                 (continue an interrupted run from its checkpoint)
  cmtjax train --branch-from runs/demo@8 --set cmt.fit_weight_cap=100 --out runs/b
                                   (go on from step 8 of runs/demo with changed settings)
  cmtjax train --target gmm40 --devices all --out runs/x            (split over all devices)
  cmtjax train --target gmm40 --set cmt.eps_tr=0.2 --dry-run        (check, print the config)
  cmtjax train --target tests/data/valdp.pdb --out runs/p         (a molecule of your own)
  cmtjax train --target tests/data/user_energy.py:two_wells --out runs/e   (a Target in Python)
  cmtjax sample --run runs/p -n 10000 --out more.npz   (more samples of a trained run)
  cmtjax evaluate --run runs/p --reference ref.npz     (metrics.json again, e.g. new reference)
  cmtjax reference --target tests/data/valdp.pdb --out ref.npz   (replica-exchange reference)

A multi-process run starts the same command in every process with ``--coordinator HOST:PORT
--num-processes P --process-id I`` (or the ``CMTJAX_*`` environment variables).

Bad input (unknown target, method or config key, a missing file, an unwritable folder, no
usable or an incompatible checkpoint) is a one-line error on stderr and exit code 2; a run that
stops because it can no longer make progress exits with code 3.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from cmtjax.io.config import (ConfigError, build_config, load_file, parse_override,
                              with_settings_added_later)
from cmtjax.io.presets import preset_for
from cmtjax.methods.registry import method_names
from cmtjax.targets.registry import USER_SPEC_HELP, TARGET_NAMES, resolve_target_spec


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="cmtjax", description="Boltzmann generators with CMT.")
  sub = p.add_subparsers(dest="command", required=True)
  t = sub.add_parser("train", help="train a flow on a target and evaluate it")
  t.add_argument("--target", help=f"target: {', '.join(TARGET_NAMES)}, or {USER_SPEC_HELP}; "
                                  f"default gmm40")
  t.add_argument("--forcefield", metavar="FILES",
                 help="molecules: comma-separated OpenMM force-field files, e.g. "
                      "amber14-all.xml,implicit/obc2.xml (default amber99sbildn.xml,"
                      "amber99_obc.xml)")
  t.add_argument("--method", help=f"training method ({', '.join(method_names())}); default cmt")
  t.add_argument("--seed", type=int, help="PRNG seed (default 0)")
  t.add_argument("--out", help="output folder (required unless --resume)")
  t.add_argument("--resume", metavar="DIR",
                 help="continue the run in DIR from its newest good checkpoint (config from "
                      "DIR/config.json; only checkpoint.* and distributed.* may be changed)")
  t.add_argument("--branch-from", metavar="DIR[@STEPS]",
                 help="start from the checkpoint of the run in DIR after STEPS steps (default: "
                      "its newest; keep more with checkpoint.keep) and go on in --out with "
                      "DIR's config changed by --set/--budget/--minutes, e.g. to try another "
                      "setting from the middle of a run")
  t.add_argument("--devices", help="devices to split the run over: 'all' or a count (default 1)")
  t.add_argument("--coordinator", help="HOST:PORT of process 0 of a multi-process run")
  t.add_argument("--num-processes", type=int, help="number of processes of a multi-process run")
  t.add_argument("--process-id", type=int, help="this process's index in a multi-process run")
  t.add_argument("--config", help="config file (JSON or TOML), e.g. a previous config.json")
  t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config value, e.g. --set cmt.eps_tr=0.2 (repeatable)")
  t.add_argument("--budget", type=float, help="max target evaluations (e.g. 2e6)")
  t.add_argument("--minutes", type=float,
                 help="a limit on the training wall time in minutes (evaluations excluded): "
                      "the run ends after the last step that fits, with its outputs and a "
                      "warning; --resume with a larger limit goes on "
                      "(checkpoint.max_training_minutes)")
  t.add_argument("--plan-minutes", type=float, metavar="MINUTES",
                 help="plan the run to end within this many minutes of training: from the "
                      "first steps' timing the budget becomes what fits (at most --budget), and "
                      "CMT anneals and refines within it (checkpoint.max_training_minutes and "
                      "checkpoint.plan_to_time_limit); metrics.json records the budget planned")
  t.add_argument("--init-from", metavar="PATH",
                 help="start the flow from an earlier run's parameters (its folder or a "
                      "params.msgpack; the flow must be the same), e.g. to refine it further")
  t.add_argument("--no-progress", action="store_true", help="no progress bar")
  t.add_argument("--dry-run", action="store_true",
                 help="check the input and print the resolved configuration; run nothing")
  s = sub.add_parser("sample", help="draw more samples from a trained run")
  s.add_argument("--run", required=True, metavar="DIR", help="run folder")
  s.add_argument("-n", type=int, default=10_000, help="number of samples (default 10000)")
  s.add_argument("--out", required=True, metavar="FILE",
                 help="output .npz (molecules: also FILE's .dcd and .pdb)")
  s.add_argument("--seed", type=int, default=0, help="PRNG seed of the draw (default 0)")
  e = sub.add_parser("evaluate", help="evaluate a trained run again and rewrite metrics.json")
  e.add_argument("--run", required=True, metavar="DIR", help="run folder")
  e.add_argument("--reference", metavar="FILE",
                 help="molecules: reference samples (.npz, e.g. from `cmtjax reference`)")
  r = sub.add_parser("reference", help="reference samples of a molecule by replica-exchange MD")
  from cmtjax.io.reference_generation import add_arguments
  add_arguments(r)
  return p


_RESUME_SECTIONS = ("checkpoint", "distributed")


def _distributed_layer(args) -> dict:
  dist: dict = {}
  if args.devices is not None:
    dist["devices"] = args.devices if args.devices == "all" else _int(args.devices, "--devices")
  if args.coordinator is not None:
    dist["coordinator"] = args.coordinator
  if args.num_processes is not None:
    dist["num_processes"] = args.num_processes
  if args.process_id is not None:
    dist["process_id"] = args.process_id
  return {"distributed": dist} if dist else {}


def _minutes_layer(args) -> dict:
  if args.minutes is not None and args.plan_minutes is not None:
    raise ConfigError("give --minutes (cut the run at a limit) or --plan-minutes (plan the run "
                      "to end within it), not both")
  for flag, minutes, plan in (("--minutes", args.minutes, False),
                              ("--plan-minutes", args.plan_minutes, True)):
    if minutes is None:
      continue
    if not minutes > 0 or not math.isfinite(minutes):
      raise ConfigError(f"{flag} must be a number of minutes > 0, got {minutes:g}")
    return {"checkpoint": {"max_training_minutes": minutes, "plan_to_time_limit": plan}}
  return {}


def _int(text: str, flag: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise ConfigError(f"{flag} must be 'all' or an integer, got {text!r}") from None


def _given(args, *names: str) -> list[str]:
  """The flags among ``names`` (argparse destinations) that the command line set."""
  return [f"--{n}".replace("_", "-") for n in names if getattr(args, n) is not None]


def _resume(args) -> int:
  given = _given(args, "target", "forcefield", "method", "seed", "config", "budget", "out",
                 "init_from")
  if given:
    raise ConfigError(f"--resume takes the run's configuration from its folder; drop "
                      f"{', '.join(given)}")
  overrides = [parse_override(s) for s in args.set]
  for o in overrides:
    bad = [k for k in o if k not in _RESUME_SECTIONS]
    if bad:
      raise ConfigError(f"--resume: only {', '.join(s + '.*' for s in _RESUME_SECTIONS)} may "
                        f"be changed, not {bad[0]!r}")
  cfg_path = os.path.join(args.resume, "config.json")
  if not os.path.isfile(cfg_path):
    raise ConfigError(f"--resume {args.resume}: no config.json there (not a run folder)")
  cfg = build_config([load_file(cfg_path), *overrides, _distributed_layer(args),
                      _minutes_layer(args)])
  if args.dry_run:
    return _print_config(cfg)
  from cmtjax.runner import run  # heavy imports only once the input is known to be good
  metrics = run(cfg, args.resume, progress=not args.no_progress, resume=True)
  _print_summary(metrics, args.resume)
  return 0


def _branch(args) -> int:
  given = _given(args, "target", "forcefield", "method", "seed", "config", "init_from")
  if given:
    raise ConfigError(f"--branch-from takes the run's configuration from its folder (change "
                      f"it with --set); drop {', '.join(given)}")
  if args.out is None:
    raise ConfigError("--branch-from needs --out (a new folder for the branch)")
  src, _, steps = args.branch_from.rpartition("@") if "@" in args.branch_from else (
      args.branch_from, "", "")
  n_from = None
  if steps:
    if not steps.isdigit():
      raise ConfigError(f"--branch-from {args.branch_from}: STEPS after '@' must be a whole "
                        f"number of completed steps")
    n_from = int(steps)
  cfg_path = os.path.join(src, "config.json")
  if not os.path.isfile(cfg_path):
    raise ConfigError(f"--branch-from {src}: no config.json there (not a run folder)")
  if os.path.abspath(src) == os.path.abspath(args.out):
    raise ConfigError("--branch-from: --out must be a new folder, not the run branched from")
  layer: dict = {}
  if args.budget is not None:
    layer["max_target_evals"] = _budget(args.budget)
  cfg = build_config([load_file(cfg_path), *[parse_override(s) for s in args.set], layer,
                      _distributed_layer(args), _minutes_layer(args)])
  if args.dry_run:
    return _print_config(cfg)
  from cmtjax.runner import run  # heavy imports only once the input is known to be good
  metrics = run(cfg, args.out, progress=not args.no_progress, branch_from=(src, n_from))
  _print_summary(metrics, args.out)
  return 0


def _budget(value: float) -> int:
  if value < 1 or not float(value).is_integer():
    raise ConfigError(f"--budget must be a whole number of target evaluations >= 1, got "
                      f"{value:g}")
  return int(value)


def _print_summary(metrics: dict, out: str) -> None:
  """The run's key figures: a JSON line for scripts, then a short summary for people."""
  keys = ("target", "method", "seed", "reverse_ess", "reverse_ess_clipped", "particle_ess",
          "log_z",
          "log_z_error", "log_z_se", "modes_covered", "n_modes", "mode_tv", "target_evals",
          "warnings", "timing")
  print(json.dumps({k: metrics[k] for k in keys if k in metrics}))
  parts = []
  if metrics.get("n_modes") is not None:
    parts.append(f"{metrics['modes_covered']}/{metrics['n_modes']} modes")
  if "reverse_ess" in metrics:
    parts.append(f"reverse ESS {metrics['reverse_ess']:.3f}")
  else:  # a particle method (SMC)
    parts.append(f"particle ESS {metrics['particle_ess']:.3f} of {metrics['n_particles']}")
  if metrics.get("log_z_error") is not None:
    parts.append(f"log Z error {metrics['log_z_error']:+.2e} "
                 f"(standard error {metrics.get('log_z_se') or 0.0:.1e})")
  parts.append(f"{metrics['target_evals']:.3g} target evaluations")
  timing = metrics.get("timing", {})
  if "total_seconds" in timing:
    parts.append(f"{timing['total_seconds']:.0f} s")
  print(f"{metrics['method']} on {metrics['target']} (seed {metrics['seed']}): "
        + ", ".join(parts))
  for w in metrics.get("warnings", []):
    print(f"WARNING: {w}")
  files = sorted(f for f in os.listdir(out) if f.endswith((".png", ".npz", ".dcd"))
                 ) if os.path.isdir(out) else []
  print(f"results in {out}: metrics.json, steps.jsonl" + "".join(f", {f}" for f in files))


def _print_config(cfg) -> int:
  from cmtjax.io.config import to_dict
  print(json.dumps(to_dict(cfg), indent=2))
  return 0


def _train(args) -> int:
  if args.resume is not None and args.branch_from is not None:
    raise ConfigError("give --resume DIR (continue a run in its folder) or --branch-from DIR "
                      "(go on from it in a new folder), not both")
  if args.resume is not None:
    return _resume(args)
  if args.branch_from is not None:
    return _branch(args)
  if args.out is None and not args.dry_run:
    raise ConfigError("--out is required (or --resume DIR)")
  cfg = _new_run_config(args)
  if args.dry_run:
    return _print_config(cfg)
  from cmtjax.runner import run  # heavy imports only once the input is known to be good
  metrics = run(cfg, args.out, progress=not args.no_progress)
  _print_summary(metrics, args.out)
  return 0


def config_for(argv: list[str]):
  """The run config that ``cmtjax train ARGV`` builds for a new run (what ``--dry-run``
  prints): the target's preset, then ``--config``, ``--set`` and the other flags, e.g.
  ``config_for(["--config", "experiments/molecules/configs/aldp_paper.toml"])``. For scripts
  that must run what the command line would (benchmarks/gpu_step.py).

  Raises:
    ConfigError: a bad flag or setting, or ``--resume`` / ``--branch-from`` (they read a
      run's own config).
  """
  args = _parser().parse_args(["train", *argv])
  if args.resume is not None or args.branch_from is not None:
    raise ConfigError("config_for builds a new run's config; --resume and --branch-from "
                      "read the run's own config.json")
  return _new_run_config(args)


def _new_run_config(args):
  """The config of a new run from ``cmtjax train`` arguments."""
  # A saved config.json repeats its run: settings added since get the default it ran with.
  file_layer = with_settings_added_later(load_file(args.config)) if args.config else {}
  flag_layer: dict = _distributed_layer(args)
  if args.target is not None:
    flag_layer["target"] = args.target
  if args.method is not None:
    flag_layer["method"] = args.method
  if args.seed is not None:
    flag_layer["seed"] = args.seed
  if args.budget is not None:
    flag_layer["max_target_evals"] = _budget(args.budget)
  if args.init_from is not None:
    if not os.path.exists(args.init_from):
      raise ConfigError(f"--init-from {args.init_from}: no such file or folder")
    flag_layer["init_params"] = os.path.abspath(args.init_from)
  if args.forcefield is not None:
    flag_layer["target_kwargs"] = {"forcefield_files": [
        f.strip() for f in args.forcefield.split(",") if f.strip()]}
  overrides = [parse_override(s) for s in args.set]
  target = flag_layer.get("target", file_layer.get("target", "gmm40"))
  flag_layer["target"] = resolve_target_spec(target)  # file paths made absolute
  # A saved config.json is complete: the preset only fills what a partial file leaves out.
  cfg = build_config([preset_for(flag_layer["target"]), file_layer, *overrides, flag_layer,
                      _minutes_layer(args)])
  if cfg.eval.reference:  # found again from any working directory (evaluate, resume)
    import dataclasses
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(
        cfg.eval, reference=os.path.abspath(cfg.eval.reference)))
  precision = cfg.target_kwargs.get("precision")
  if precision is not None and precision not in ("float32", "float64"):
    raise ConfigError(f"target_kwargs.precision must be 'float32' or 'float64', got "
                      f"{precision!r}")
  return cfg


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return text or type(e).__name__


def _sample(args) -> int:
  from cmtjax.api import load_run
  if args.n < 1:
    raise ConfigError(f"-n must be >= 1, got {args.n}")
  run = load_run(args.run)
  written = run.save_samples(args.out, args.n, seed=args.seed)
  print(f"{args.n} samples of {args.run} -> {', '.join(written)}")
  return 0


def _evaluate(args) -> int:
  from cmtjax.api import load_run
  if args.reference is not None and not os.path.isfile(args.reference):
    raise ConfigError(f"--reference {args.reference}: file not found")
  run = load_run(args.run)
  metrics = run.evaluate(args.reference)
  _print_summary(metrics, args.run)
  return 0


def _reference(args) -> int:
  from cmtjax.io.reference_generation import generate
  generate(args)
  return 0


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  # No device is touched on import (a multi-process run initialises jax.distributed later).
  from cmtjax.train.checkpoint import CheckpointError
  from cmtjax.train.loop import TrainingStalled
  try:
    if args.command == "train":
      return _train(args)
    if args.command == "sample":
      return _sample(args)
    if args.command == "evaluate":
      return _evaluate(args)
    if args.command == "reference":
      return _reference(args)
  except TrainingStalled as e:
    print(f"cmtjax: {e}", file=sys.stderr)
    return 3
  except (ConfigError, ValueError, ImportError, CheckpointError) as e:
    print(f"cmtjax: error: {_one_line(e)}", file=sys.stderr)
    return 2
  except OSError as e:  # FileNotFoundError included
    print(f"cmtjax: error: {_one_line(e)}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("cmtjax: interrupted", file=sys.stderr)
    return 130
  return 2


if __name__ == "__main__":
  sys.exit(main())
