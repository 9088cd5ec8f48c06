"""Where an annealing step's time goes: sampling the flow, the target's energies, the dual
solve, the fit.

Each part is jitted and timed on its own (median of repeats, after compilation), side by side
in one run, and compared with the whole jitted CMT step. The dual is timed both cold (λ = η = 1)
and warm-started from the previous solution, as in training. The run's flow is the one
``cmtjax train`` builds (internal coordinates for molecules); ``--set`` overrides the preset as
on the command line.

  .venv/bin/python benchmarks/step_breakdown.py [--target gmm40] [--n-samples 10000 100000]
  .venv/bin/python benchmarks/step_breakdown.py --target aldp --n-samples 10000

Writes benchmarks/results/step_breakdown.json and .md (step_breakdown_<target>.* for targets
other than gmm40).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.cmt import make_buffer, solve_dual
from cmtjax.flows import flow_for_target
from cmtjax.io.config import build_config, parse_override
from cmtjax.io.presets import preset_for
from cmtjax.methods import make_cmt
from cmtjax.train.fit import make_optimizer
from cmtjax.cmt import normalised_log_weights
from cmtjax.targets import make_target
from cmtjax.train import fit_weighted


def _time(fn, *args, repeats=5):
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts))


def breakdown(target_name: str, n_samples: int, warmup_steps: int = 3,
              overrides: tuple = ()) -> dict:
  cfg = build_config([preset_for(target_name), {"target": target_name}, *overrides,
                      {"cmt": {"n_samples": n_samples}}])
  target = make_target(target_name)
  flow = flow_for_target(cfg.flow, target)
  c = cfg.method_config
  method = make_cmt(c, flow, target, n_steps=100)
  state = method.init(jax.random.PRNGKey(0), flow.init(jax.random.PRNGKey(1)))
  step = jax.jit(method.step)
  for i in range(warmup_steps):  # move off the initial flow so the dual is a typical one
    state, info = step(jax.random.PRNGKey(10 + i), state)
  ms = state.method_state

  @jax.jit
  def sample(key, params):
    x, lq = flow.sample_and_log_prob(params, key, n_samples)
    return make_buffer(x, lq, target.log_prob(x))

  flow_sample = jax.jit(lambda k, p: flow.sample_and_log_prob(p, k, n_samples))
  energies = jax.jit(target.log_prob)
  buf = sample(jax.random.PRNGKey(3), state.params)
  dual = jax.jit(lambda b, l, e: solve_dual(b, c.eps_tr, c.eps_ent, l, e))
  sol = dual(buf, ms.lam, ms.eta)
  opt = make_optimizer(c.learning_rate, c.grad_clip)
  log_wbar = normalised_log_weights(buf, sol.lam, sol.eta)
  fit = jax.jit(lambda p, s, k: fit_weighted(flow.log_prob, opt, p, s, k, buf.x, log_wbar,
                                             n_steps=c.n_grad_steps, batch_size=c.batch_size,
                                             mode=c.fit_mode))
  t = {
      "sample_and_target": _time(sample, jax.random.PRNGKey(4), state.params),
      "flow_sample": _time(flow_sample, jax.random.PRNGKey(4), state.params),
      "target": _time(energies, buf.x),
      "dual_cold": _time(dual, buf, jnp.ones(()), jnp.ones(())),
      "dual_warm": _time(dual, buf, sol.lam * 1.05, sol.eta * 1.05),
      "fit": _time(fit, state.params, state.opt_state, jax.random.PRNGKey(5), repeats=3),
      "whole_step": _time(lambda k: step(k, state), jax.random.PRNGKey(6), repeats=3),
  }
  parts = t["sample_and_target"] + t["dual_warm"] + t["fit"]
  return {"target": target_name, "n_samples": n_samples, "n_grad_steps": c.n_grad_steps,
          "batch_size": c.batch_size, "lambda": float(sol.lam), "eta": float(sol.eta),
          "dual_iterations": int(sol.iterations), "seconds": t,
          "dual_share_of_step": t["dual_warm"] / t["whole_step"],
          "dual_share_of_parts": t["dual_warm"] / parts,
          "fit_share_of_parts": t["fit"] / parts}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--target", default="gmm40")
  ap.add_argument("--n-samples", nargs="*", type=int, default=[10_000, 100_000])
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override (as for cmtjax train), e.g. cmt.n_grad_steps=200")
  ap.add_argument("--out", default="benchmarks/results")
  args = ap.parse_args()
  overrides = tuple(parse_override(s) for s in args.set)
  rows = [breakdown(args.target, n, overrides=overrides) for n in args.n_samples]
  os.makedirs(args.out, exist_ok=True)
  stem = "step_breakdown" if args.target == "gmm40" else f"step_breakdown_{args.target}"
  with open(os.path.join(args.out, f"{stem}.json"), "w") as f:
    json.dump({"jax": jax.__version__, "devices": str(jax.devices()), "rows": rows}, f, indent=2)
  lines = ["| target | N | K×B | flow sample (s) | target (s) | sample+target (s) | "
           "dual warm (s) | dual cold (s) | fit (s) | whole step (s) | dual share of step |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    s = r["seconds"]
    lines.append(f"| {r['target']} | {r['n_samples']} | {r['n_grad_steps']}×{r['batch_size']} | "
                 f"{s['flow_sample']:.4f} | {s['target']:.4f} | "
                 f"{s['sample_and_target']:.4f} | {s['dual_warm']:.5f} | {s['dual_cold']:.5f} | "
                 f"{s['fit']:.3f} | {s['whole_step']:.3f} | {100 * r['dual_share_of_step']:.3f} % |")
  with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
