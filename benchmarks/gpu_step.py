"""Times one CMT annealing step at paper scale for alanine dipeptide (GPU), or a scaled-down
version of it (CPU).

Paper scale (CMT.md §4-5): buffer N = 5e5 samples per step, 8 rational-quadratic spline
couplings with 8 bins and 5x256 dense conditioners. The target is ``make_target("aldp")``:
AMBER99SB-ILDN + OBC2 in JAX, 22 atoms. Internal coordinates are not implemented yet, so the
flow acts on the 66 Cartesian coordinates (the paper's flow works on 60 internal coordinates;
the conditioner sizes are the same, the first and last layers are 66 wide instead of 60).

Parts are jitted and timed on their own, side by side, then the whole jitted step:
  sampling      N flow samples with their log densities         -> samples/s
  energies      N target evaluations (log p̃ = −u(x), regularised) -> energies/s
  fit           K optimiser steps on minibatches of B             -> gradient steps/s
  step          the whole CMT step (sample, energies, dual, K-step fit, diagnostics)
The paper uses K = 2000 per annealing step; the printed "step at K=2000" extrapolates from the
measured step and gradient-step rate. Times are the best of --repeats calls after compilation
(compilation is reported separately). With --devices all the step is split over all devices
along the sample axis (cmtjax.train.sharding).

  python benchmarks/gpu_step.py                 # GPU: paper scale; CPU: scaled down
  python benchmarks/gpu_step.py --n-samples 100000 --fit-steps 100

Writes benchmarks/results/gpu_step_<platform>.json and .md.
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

from cmtjax.flows import FlowConfig, make_flow
from cmtjax.methods import CMTConfig, make_cmt
from cmtjax.train.fit import make_optimizer
from cmtjax.targets import make_target
from cmtjax.train import fit_weighted, make_mesh

HERE = os.path.dirname(os.path.abspath(__file__))
PAPER_K = 2000
# (N, K, B, chunk) per platform: paper scale on an accelerator, a testable size on CPU.
DEFAULTS = {"gpu": (500_000, 200, 2048, 65_536), "cpu": (4096, 10, 256, None)}


def _best(fn, *args, repeats):
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


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n-samples", type=int, help="buffer size N")
  p.add_argument("--fit-steps", type=int, help="optimiser steps K timed per step")
  p.add_argument("--batch-size", type=int, help="fit minibatch size B")
  p.add_argument("--chunk", type=int, help="energy evaluation chunk (rows per sequential map)")
  p.add_argument("--devices", default="1", help="'all' or a count: split the step over them")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default=os.path.join(HERE, "results"))
  args = p.parse_args(argv)

  backend = jax.default_backend()
  kind = "cpu" if backend == "cpu" else "gpu"
  n, k, b, chunk = DEFAULTS[kind]
  n = args.n_samples or n
  k = args.fit_steps or k
  b = args.batch_size or b
  chunk = args.chunk or chunk
  devices = args.devices if args.devices == "all" else int(args.devices)
  mesh = make_mesh(devices)
  n_dev = 1 if mesh is None else mesh.size
  print(f"backend={backend} devices={n_dev} ({jax.devices()[0].device_kind}) N={n} K={k} "
        f"B={b} energy chunk={chunk}")

  target = make_target("aldp", **({"chunk_size": chunk} if chunk else {}))
  flow_cfg = FlowConfig(dim=target.dim, coupling="spline", n_layers=8, n_bins=8,
                        hidden=(256,) * 5, base_scale=1.0)
  flow = make_flow(flow_cfg)
  params = flow.init(jax.random.PRNGKey(0))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  key = jax.random.PRNGKey(1)

  sample = jax.jit(lambda p_, k_: flow.sample_and_log_prob(p_, k_, n))
  t_sample, c_sample = _best(sample, params, key, repeats=args.repeats)
  x, log_q = sample(params, key)
  energies = jax.jit(target.log_prob)
  t_energy, c_energy = _best(energies, x, repeats=args.repeats)
  log_p = energies(x)
  n_finite = int(jnp.sum(jnp.isfinite(log_p) & jnp.isfinite(log_q)))

  optimizer = make_optimizer(1e-4, 100.0)
  opt_state = optimizer.init(params)
  log_wbar = jnp.full((n,), -jnp.log(n))
  # The buffer is an argument, not a closed-over constant (5e5 x 66 floats in the program).
  fit = jax.jit(lambda p_, s_, k_, x_, w_: fit_weighted(
      flow.log_prob, optimizer, p_, s_, k_, x_, w_, n_steps=k, batch_size=b)[2].loss_last)
  t_fit, c_fit = _best(fit, params, opt_state, key, x, log_wbar, repeats=args.repeats)

  method = make_cmt(CMTConfig(n_samples=n, n_grad_steps=k, batch_size=b), flow, target,
                    n_steps=200)
  state = method.init(key, params)
  step = jax.jit(method.step)  # no donation: the same state is timed repeatedly

  def run_step(st, kk):
    if mesh is None:
      return step(kk, st)
    with jax.set_mesh(mesh):
      return step(kk, st)

  if mesh is not None:
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  t_step, c_step = _best(run_step, state, key, repeats=args.repeats)
  _, info = run_step(state, key)

  gsps = k / t_fit
  res = {
      "backend": backend, "device_kind": jax.devices()[0].device_kind, "n_devices": n_dev,
      "host": platform.node(), "jax": jax.__version__, "target": "aldp (Cartesian, 66-D)",
      "flow": "8 RQ-spline couplings, 8 bins, 5x256 conditioners", "n_params": n_params,
      "n_samples": n, "fit_steps": k, "batch_size": b, "energy_chunk": chunk,
      "sample_s": t_sample, "samples_per_s": n / t_sample,
      "energy_s": t_energy, "energies_per_s": n / t_energy,
      "fit_s": t_fit, "grad_steps_per_s": gsps,
      "step_s": t_step, "step_at_paper_K_s": t_step + (PAPER_K - k) / gsps,
      "compile_s": {"sample": c_sample, "energy": c_energy, "fit": c_fit, "step": c_step},
      "buffer_finite": n_finite, "step_n_invalid": int(info.n_invalid),
      "step_dual_converged": bool(info.dual_converged),
  }
  rows = [("samples/s (flow sample + log q)", f"{res['samples_per_s']:.4g}"),
          ("energies/s (aldp log p̃)", f"{res['energies_per_s']:.4g}"),
          (f"gradient steps/s (B={b})", f"{gsps:.4g}"),
          (f"one CMT step, N={n}, K={k} (s)", f"{t_step:.4g}"),
          (f"one CMT step extrapolated to K={PAPER_K} (s)", f"{res['step_at_paper_K_s']:.4g}"),
          ("compile: whole step (s)", f"{c_step:.3g}")]
  for name, v in rows:
    print(f"{name:48s} {v}")
  os.makedirs(args.out, exist_ok=True)
  stem = os.path.join(args.out, f"gpu_step_{backend}")
  with open(stem + ".json", "w") as f:
    json.dump(res, f, indent=2)
  with open(stem + ".md", "w") as f:
    f.write(f"# One CMT annealing step on aldp ({backend}, {n_dev} x "
            f"{res['device_kind']})\n\n{res['flow']}, {n_params} parameters; Cartesian "
            f"coordinates (66-D).\n\n| quantity | value |\n|---|---|\n")
    f.writelines(f"| {name} | {v} |\n" for name, v in rows)
  print(f"wrote {stem}.json and .md")
  return res


if __name__ == "__main__":
  main()
