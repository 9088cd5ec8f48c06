"""What one round of the SMC baseline costs, pulling the target back through the flow's fixed
map (``smc.pull_back = "initial"``, the default) or through every coupling layer of the flow
(``"flow"``), measured side by side in one process on the target's preset flow.

  .venv/bin/python benchmarks/smc_round.py [--target aldp] [--rounds 3] [--set smc.n_particles=2000]

Both settings start from the same particles and keys and compute the same map T₀ (the script
checks it to float32 tolerance on 4,096 base points). Reports
compile time, the median seconds per round after compilation, the ratio, and CPU seconds
beside wall time. Writes benchmarks/results/smc_round_<target>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import time

import jax
import numpy as np

from cmtjax.flows import flow_for_target
from cmtjax.io.config import build_config, parse_override
from cmtjax.io.presets import preset_for
from cmtjax.methods import make_method
from cmtjax.methods.smc import SMCConfig
from cmtjax.targets import make_target


def _cpu() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def time_rounds(method, params, rounds: int) -> dict:
  state = method.init(jax.random.PRNGKey(0), params)
  step = jax.jit(method.step)
  keys = jax.random.split(jax.random.PRNGKey(1), rounds + 1)
  t0 = time.perf_counter()
  state, info = step(keys[0], state)
  jax.block_until_ready(state)
  first = time.perf_counter() - t0
  times, cpus = [], []
  for k in keys[1:]:
    t0, c0 = time.perf_counter(), _cpu()
    state, info = step(k, state)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
    cpus.append(_cpu() - c0)
  ms = state.method_state
  return {"first_round_s": first, "round_s": float(np.median(times)),
          "round_cpu_s": float(np.median(cpus)), "rounds_s": times,
          "beta": float(ms.beta), "log_z": float(ms.log_z),
          "acceptance": float(info.acceptance)}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--target", default="aldp")
  ap.add_argument("--rounds", type=int, default=3, help="timed rounds after the first")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override (e.g. smc.n_particles=500)")
  args = ap.parse_args()
  cfg = build_config([preset_for(args.target), {"target": args.target, "method": "smc"},
                      *[parse_override(s) for s in args.set]])
  target = make_target(args.target)
  flow = flow_for_target(cfg.flow, target)
  params = flow.init(jax.random.PRNGKey(1))
  smc = cfg.method_config if cfg.method_config is not None else SMCConfig()
  out = {"target": args.target, "backend": jax.default_backend(),
         "smc": dataclasses.asdict(smc), "flow": cfg.flow}
  results = {}
  for pull_back in ("initial", "flow"):
    c = dataclasses.replace(smc, pull_back=pull_back)
    method = make_method("smc", c, flow, target, 100)
    results[pull_back] = time_rounds(method, params, args.rounds)
    r = results[pull_back]
    print(f"{pull_back:8s}: first round (compile) {r['first_round_s']:.1f} s, then "
          f"{r['round_s']:.2f} s per round ({r['round_cpu_s']:.2f} CPU-s); beta {r['beta']:.4g},"
          f" log Z {r['log_z']:.4f}", flush=True)
  a, b = results["initial"], results["flow"]
  # The map itself: T0 by its fixed map and by the flow at its initial parameters. (The
  # rounds' particles drift apart after a few rounds through float32 rounding, which flips
  # an HMC acceptance here and there: the same sampler, not the same bits.)
  z = flow.base_sample(jax.random.PRNGKey(2), 4096)
  x0, ld0 = flow.initial_forward(z)
  x1, ld1 = flow.forward(params, z)
  diff = float(np.max(np.abs(np.asarray(x0) - np.asarray(x1))))
  diff_ld = float(np.max(np.abs(np.asarray(ld0) - np.asarray(ld1))))
  out.update(results)
  out["speedup"] = b["round_s"] / a["round_s"]
  out["max_abs_x_difference"], out["max_abs_log_det_difference"] = diff, diff_ld
  print(f"'initial' is {out['speedup']:.1f}x faster per round; T0 by both: max |dx| "
        f"{diff:.2g}, max |d log det| {diff_ld:.2g}; after {args.rounds + 1} rounds beta "
        f"{a['beta']:.6g} vs {b['beta']:.6g}")
  os.makedirs("benchmarks/results", exist_ok=True)
  path = f"benchmarks/results/smc_round_{args.target}.json"
  with open(path, "w") as f:
    json.dump(out, f, indent=1)
  print("wrote", path)


if __name__ == "__main__":
  main()
