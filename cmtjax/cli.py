"""The ``cmtjax`` command.

  cmtjax train --target gmm40 --method cmt --seed 0 --out runs/demo
  cmtjax train --config experiments/gmm40_cmt.toml --set cmt.eps_ent=0.8 --out runs/x
  cmtjax train --config runs/demo/config.json --out runs/demo-again     (repeat a run)

Bad input (unknown target, method or config key, a missing file, an unwritable folder) is a
one-line error on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from cmtjax.io.config import ConfigError, build_config, load_file, parse_override
from cmtjax.io.presets import preset_for
from cmtjax.targets import TARGET_NAMES


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="cmtjax", description="Boltzmann generators with CMT.")
  sub = p.add_subparsers(dest="command", required=True)
  t = sub.add_parser("train", help="train a flow on a target and evaluate it")
  t.add_argument("--target", help=f"target name ({', '.join(TARGET_NAMES)}); default gmm40")
  t.add_argument("--method", help="training method (cmt, reverse_kl); default cmt")
  t.add_argument("--seed", type=int, help="PRNG seed (default 0)")
  t.add_argument("--out", required=True, help="output folder")
  t.add_argument("--config", help="config file (JSON or TOML), e.g. a previous config.json")
  t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config value, e.g. --set cmt.eps_tr=0.2 (repeatable)")
  t.add_argument("--budget", type=float, help="max target evaluations (e.g. 2e6)")
  t.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def _train(args) -> int:
  file_layer = load_file(args.config) if args.config else {}
  flag_layer: dict = {}
  if args.target is not None:
    flag_layer["target"] = args.target
  if args.method is not None:
    flag_layer["method"] = args.method
  if args.seed is not None:
    flag_layer["seed"] = args.seed
  if args.budget is not None:
    flag_layer["max_target_evals"] = int(args.budget)
  overrides = [parse_override(s) for s in args.set]
  target = flag_layer.get("target", file_layer.get("target", "gmm40"))
  if target not in TARGET_NAMES:
    raise ConfigError(f"unknown target {target!r}; known targets: {', '.join(TARGET_NAMES)}")
  # A saved config.json is complete: the preset only fills what a partial file leaves out.
  cfg = build_config([preset_for(target), file_layer, *overrides, flag_layer])
  from cmtjax.runner import run  # heavy imports only once the input is known to be good
  metrics = run(cfg, args.out, progress=not args.no_progress)
  keys = ("target", "method", "seed", "reverse_ess", "reverse_ess_clipped", "log_z",
          "log_z_error", "modes_covered", "n_modes", "mode_tv", "target_evals", "wall_seconds")
  print(json.dumps({k: metrics[k] for k in keys if k in metrics}))
  print(f"results in {args.out}")
  return 0


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == "train":
      return _train(args)
  except (ConfigError, ValueError, ImportError) as e:
    print(f"cmtjax: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"cmtjax: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("cmtjax: interrupted", file=sys.stderr)
    return 130
  return 2


if __name__ == "__main__":
  sys.exit(main())
