"""Times one CMT annealing step at paper scale for each molecule (GPU), or a scaled-down
version of it (CPU).

Each system's run is the one ``cmtjax train --config experiments/molecules/configs/
<name>_paper.toml`` builds (CMT.md §4-5): internal-coordinate flow of 8 RQ-spline couplings with
8 bins and 5x256 conditioners, buffer N = 5e5 samples per step, K = 2000 gradient steps of
batch 1024 per step, AMBER99SB-ILDN + OBC in JAX.

Parts are jitted and timed on their own, side by side, for every system:
  sampling      N flow samples with their log densities          -> samples/s
  energies      N target evaluations (log p̃ = −u(x), regularised), with the target's own
                energy chunk (what a run uses) and with each --energy-chunks value
  fit           --fit-steps optimiser steps on minibatches of the config's batch size
                                                                   -> gradient steps/s
and, for the systems of --whole-step, the whole jitted CMT step (sample, energies, dual,
fit, diagnostics) at --fit-steps. "step at K=2000" is sampling + energies + 2000 gradient steps
at the measured rate (+ the rest of the measured whole step where there is one). Times are the
best of --repeats calls after compilation (compilation is reported separately). With --devices
all the whole step is split over all devices along the sample axis (cmtjax.train.sharding).

  python benchmarks/gpu_step.py                          # GPU: paper scale, all four systems
  python benchmarks/gpu_step.py --targets aldp --n-samples 4096 --fit-steps 10   # CPU check

Writes benchmarks/results/gpu_step_<platform>.json and .md (or under --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.cli import config_for
from cmtjax.flows import flow_for_target
from cmtjax.methods import make_cmt
from cmtjax.targets import make_target
from cmtjax.train import fit_weighted, make_mesh
from cmtjax.train.fit import make_optimizer

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(os.path.dirname(HERE), "experiments", "molecules", "configs")
PAPER_K = 2000
# (N, K timed) per platform: paper scale on an accelerator, a testable size on CPU.
DEFAULTS = {"gpu": (500_000, 200), "cpu": (4096, 10)}


def _best(fn, *args, repeats):
  """(best time over ``repeats`` calls, compile time = first call − best)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  best = min(ts)
  return best, max(first - best, 0.0)


def paper_config(name: str, n: int, k: int):
  """The run config ``cmtjax train --config <name>_paper.toml`` builds, with buffer ``n`` and
  ``k`` gradient steps."""
  return config_for(["--config", os.path.join(CONFIGS, f"{name}_paper.toml"),
                     "--set", f"cmt.n_samples={n}", "--set", f"cmt.n_grad_steps={k}"])


def time_system(name: str, n: int, k: int, repeats: int, energy_chunks, whole_step: bool,
                mesh) -> dict:
  cfg = paper_config(name, n, k)
  c = cfg.method_config
  target = make_target(name, **cfg.target_kwargs)
  flow = flow_for_target(cfg.flow, target)
  params = flow.init(jax.random.PRNGKey(0))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  key = jax.random.PRNGKey(1)
  res = {"target": name, "dim": int(target.dim), "n_atoms": int(target.info.get("n_atoms", 0)),
         "n_params": n_params, "n_samples": n, "fit_steps": k, "batch_size": c.batch_size,
         "energy_chunk": int(target.info.get("chunk_size", 0)), "compile_s": {}}
  print(f"[{name}] dim {target.dim}, {n_params} flow parameters, N={n}, K={k}, "
        f"B={c.batch_size}, energy chunk {res['energy_chunk']}", flush=True)

  sample = jax.jit(lambda p_, k_: flow.sample_and_log_prob(p_, k_, n))
  res["sample_s"], res["compile_s"]["sample"] = _best(sample, params, key, repeats=repeats)
  x, log_q = sample(params, key)
  energies = jax.jit(target.log_prob)
  res["energy_s"], res["compile_s"]["energy"] = _best(energies, x, repeats=repeats)
  log_p = energies(x)
  res["buffer_finite"] = int(jnp.sum(jnp.isfinite(log_p) & jnp.isfinite(log_q)))
  res["energy_s_by_chunk"] = {}
  for chunk in energy_chunks:
    t_chunked = make_target(name, **(cfg.target_kwargs | {"chunk_size": chunk}))
    res["energy_s_by_chunk"][str(chunk)] = _best(jax.jit(t_chunked.log_prob), x,
                                                 repeats=repeats)[0]
  print(f"[{name}] sample {res['sample_s']:.3f} s, energies {res['energy_s']:.3f} s "
        f"(by chunk {res['energy_s_by_chunk']})", flush=True)

  optimizer = make_optimizer(c.learning_rate, c.grad_clip)
  opt_state = optimizer.init(params)
  log_wbar = jnp.full((n,), -jnp.log(n))
  # The buffer is an argument, not a closed-over constant (5e5 x dim floats in the program).
  fit = jax.jit(lambda p_, s_, k_, x_, w_: fit_weighted(
      flow.log_prob, optimizer, p_, s_, k_, x_, w_, n_steps=k, batch_size=c.batch_size,
      mode=c.fit_mode)[2].loss_last)
  res["fit_s"], res["compile_s"]["fit"] = _best(fit, params, opt_state, key, x, log_wbar,
                                                repeats=repeats)
  res["grad_steps_per_s"] = k / res["fit_s"]
  parts = res["sample_s"] + res["energy_s"]
  res["step_at_paper_K_s"] = parts + PAPER_K / res["grad_steps_per_s"]
  print(f"[{name}] fit {res['fit_s']:.3f} s for {k} steps ({res['grad_steps_per_s']:.1f}/s)",
        flush=True)

  if whole_step:
    method = make_cmt(c, flow, target, n_steps=200)
    state = method.init(key, params)
    step = jax.jit(method.step)  # no donation: the same state is timed repeatedly

    def run_step(st, kk):
      if mesh is None:
        return step(kk, st)
      with jax.set_mesh(mesh):
        return step(kk, st)

    if mesh is not None:
      state = jax.device_put(
          state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    res["step_s"], res["compile_s"]["step"] = _best(run_step, state, key, repeats=repeats)
    _, info = run_step(state, key)
    res["step_n_invalid"] = int(info.n_invalid)
    res["step_dual_converged"] = bool(info.dual_converged)
    # The whole step's own overhead beyond its parts (dual, diagnostics, buffer) is kept.
    res["step_at_paper_K_s"] = res["step_s"] + (PAPER_K - k) / res["grad_steps_per_s"]
    print(f"[{name}] whole step {res['step_s']:.3f} s at K={k}", flush=True)
  return res


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--targets", nargs="+", default=["aldp", "ala4", "ala6", "elil"])
  p.add_argument("--n-samples", type=int, help="buffer size N")
  p.add_argument("--fit-steps", type=int, help="optimiser steps K timed per step")
  p.add_argument("--energy-chunks", type=int, nargs="*", default=[65_536],
                 help="energy chunk sizes timed beside the target's own")
  p.add_argument("--whole-step", nargs="*", default=["aldp"],
                 help="systems whose whole CMT step is also timed")
  p.add_argument("--devices", default="1", help="'all' or a count: split the step over them")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default=os.path.join(HERE, "results"))
  args = p.parse_args(argv)

  backend = jax.default_backend()
  n, k = DEFAULTS["cpu" if backend == "cpu" else "gpu"]
  n = args.n_samples or n
  k = args.fit_steps or k
  devices = args.devices if args.devices == "all" else int(args.devices)
  mesh = make_mesh(devices)
  n_dev = 1 if mesh is None else mesh.size
  print(f"backend={backend} devices={n_dev} ({jax.devices()[0].device_kind}) N={n} K={k}",
        flush=True)
  res = {"backend": backend, "device_kind": jax.devices()[0].device_kind, "n_devices": n_dev,
         "host": platform.node(), "jax": jax.__version__, "paper_K": PAPER_K, "systems": []}
  os.makedirs(args.out, exist_ok=True)
  stem = os.path.join(args.out, f"gpu_step_{backend}")
  for name in args.targets:
    res["systems"].append(time_system(name, n, k, args.repeats, args.energy_chunks,
                                      name in args.whole_step, mesh))
    with open(stem + ".json", "w") as f:  # after each system: a later failure keeps it
      json.dump(res, f, indent=2)

  lines = [f"# One CMT annealing step per molecule ({backend}, {n_dev} x {res['device_kind']}, "
           f"jax {jax.__version__})\n",
           f"Paper-scale configs (experiments/molecules/configs/*_paper.toml): N = {n}, "
           f"{k} gradient steps timed, extrapolated to K = {PAPER_K}.\n",
           "| system | dim | flow params | sample N (s) | energies N (s) | energies, other "
           "chunks (s) | gradient steps/s | whole step at K timed (s) | step at K=2000 (s) | "
           "compile (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
  for s in res["systems"]:
    other = ", ".join(f"{c}: {t:.3f}" for c, t in s["energy_s_by_chunk"].items())
    whole = f"{s['step_s']:.3f}" if "step_s" in s else "–"
    lines.append(f"| {s['target']} | {s['dim']} | {s['n_params']} | {s['sample_s']:.3f} | "
                 f"{s['energy_s']:.3f} (chunk {s['energy_chunk']}) | {other} | "
                 f"{s['grad_steps_per_s']:.1f} | {whole} | {s['step_at_paper_K_s']:.1f} | "
                 f"{sum(s['compile_s'].values()):.0f} |")
  text = "\n".join(lines) + "\n"
  print(text)
  with open(stem + ".md", "w") as f:
    f.write(text)
  print(f"wrote {stem}.json and .md")
  return res


if __name__ == "__main__":
  main()
