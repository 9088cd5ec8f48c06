"""Energy + force throughput of the JAX molecular energy against OpenMM, side by side.

For each system and batch size B, the same B perturbed configurations are evaluated
  * by the jitted, vmapped JAX energy_and_forces (float32 and, with --float64, float64),
  * by OpenMM's CPU and Reference platforms, one configuration at a time
    (setPositions + getState(energy, forces)), as a sampler calling OpenMM would.
Times are per configuration; ratios are OpenMM time / JAX time (> 1: JAX faster).
JAX times exclude compilation (reported separately) and are the best of --repeats runs; OpenMM
times are the best 50-configuration block of the loop (its mean rate is saved in the JSON).
Both "best" figures discount load from other processes on a shared machine. The core-time
ratios use process CPU time (all threads) instead of wall time: the cost in core-seconds, which
other processes on the machine barely disturb.

  python benchmarks/molecular_energy.py                      # all systems, B = 1 .. 10000
  python benchmarks/molecular_energy.py --systems aldp --batches 1 100 1000

Writes benchmarks/molecular_energy.{json,md}.
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

from cmtjax.targets.molecules import create_openmm_system, load_molecular_system

HERE = os.path.dirname(os.path.abspath(__file__))


def _configs(positions, n, seed=0, sigma=0.01):
  rng = np.random.default_rng(seed)
  return positions[None] + sigma * rng.normal(size=(n,) + positions.shape)


def _time_jax(fn, x, repeats):
  t0 = time.perf_counter()
  compiled = fn.lower(x).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(x))
  best, best_cpu = np.inf, np.inf
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(x))
    best = min(best, time.perf_counter() - t0)
    best_cpu = min(best_cpu, time.process_time() - c0)
  return best, best_cpu, compile_s


def _time_openmm(system, platform_name, x, threads=None, block=50):
  """Per-configuration time of OpenMM: (best block rate, overall rate), in s.

  The loop over configurations is timed in blocks of ``block`` configurations; the best block
  is the counterpart of the best-of-repeats JAX time (both discount load from other processes
  on a shared machine), the overall rate is reported too.
  """
  import openmm  # pylint: disable=g-import-not-at-top

  props = {}
  if platform_name == "CPU" and threads:
    props = {"Threads": str(threads)}
  ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                       openmm.Platform.getPlatformByName(platform_name), props)
  ctx.setPositions(x[0])
  ctx.getState(getEnergy=True, getForces=True)
  best, best_cpu, total = np.inf, np.inf, 0.0
  for start in range(0, len(x), block):
    chunk = x[start:start + block]
    t0, c0 = time.perf_counter(), time.process_time()
    for xi in chunk:
      ctx.setPositions(xi)
      state = ctx.getState(getEnergy=True, getForces=True)
      state.getPotentialEnergy()
      state.getForces(asNumpy=True)
    dt = time.perf_counter() - t0
    total += dt
    best = min(best, dt / len(chunk))
    best_cpu = min(best_cpu, (time.process_time() - c0) / len(chunk))
  return best, best_cpu, total / len(x)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--systems", nargs="+", default=["aldp", "ala4", "ala6", "elil"])
  parser.add_argument("--batches", nargs="+", type=int, default=[1, 100, 1000, 10000])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--openmm-max", type=int, default=10000,
                      help="evaluate at most this many configurations with OpenMM per batch "
                           "(time per configuration is extrapolated from them)")
  parser.add_argument("--threads", type=int, default=None, help="OpenMM CPU platform threads")
  parser.add_argument("--float64", action="store_true", help="also time the float64 path")
  parser.add_argument("--out", default=os.path.join(HERE, "molecular_energy"))
  args = parser.parse_args()

  load_start = os.getloadavg()
  rows = []
  for name in args.systems:
    sys32 = load_molecular_system(name, precision="float32")
    sys64 = load_molecular_system(name, precision="float64") if args.float64 else None
    omm_system, _, positions = create_openmm_system(sys32.pdb_path)
    for batch in args.batches:
      x = _configs(positions, batch)
      flat = x.reshape(batch, -1)
      jax_s, jax_cpu, compile_s = _time_jax(
        sys32.energy_and_forces, jnp.asarray(flat, jnp.float32), args.repeats)
      row = {"system": name, "n_atoms": sys32.n_atoms, "batch": batch,
             "jax_f32_s_per_conf": jax_s / batch, "jax_f32_cpu_s_per_conf": jax_cpu / batch,
             "jax_f32_compile_s": compile_s}
      if sys64 is not None:
        with jax.enable_x64(True):
          t64, _, _ = _time_jax(sys64.energy_and_forces, jnp.asarray(flat, jnp.float64),
                                args.repeats)
        row["jax_f64_s_per_conf"] = t64 / batch
      n_omm = min(batch, args.openmm_max)
      for plat in ("CPU", "Reference"):
        best, best_cpu, mean = _time_openmm(omm_system, plat, x[:n_omm], args.threads)
        row[f"openmm_{plat.lower()}_s_per_conf"] = best
        row[f"openmm_{plat.lower()}_cpu_s_per_conf"] = best_cpu
        row[f"openmm_{plat.lower()}_mean_s_per_conf"] = mean
        row[f"speedup_vs_{plat.lower()}"] = best / row["jax_f32_s_per_conf"]
        row[f"cpu_time_ratio_vs_{plat.lower()}"] = best_cpu / row["jax_f32_cpu_s_per_conf"]
      row["openmm_configs_timed"] = n_omm
      rows.append(row)
      print(f"{name:5s} B={batch:6d}  JAX f32 {1e6 * row['jax_f32_s_per_conf']:9.1f} us/conf"
            + (f"  f64 {1e6 * row['jax_f64_s_per_conf']:9.1f}" if sys64 is not None else "")
            + f"  OpenMM CPU {1e6 * row['openmm_cpu_s_per_conf']:8.1f}"
            f"  Reference {1e6 * row['openmm_reference_s_per_conf']:8.1f} us/conf"
            f"  ratio CPU/JAX {row['speedup_vs_cpu']:8.2f}  Ref/JAX {row['speedup_vs_reference']:8.2f}"
            f"  | core-time ratio CPU/JAX {row['cpu_time_ratio_vs_cpu']:7.2f}"
            f"  Ref/JAX {row['cpu_time_ratio_vs_reference']:7.2f}"
            f"  (compile {compile_s:.1f} s)", flush=True)

  meta = {"jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
          "machine": platform.machine(), "openmm_cpu_threads": args.threads or "default",
          "loadavg_1min_start_end": [load_start[0], os.getloadavg()[0]]}
  import openmm  # pylint: disable=g-import-not-at-top
  meta["openmm"] = openmm.__version__
  with open(args.out + ".json", "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=1)
  lines = ["| system | atoms | batch | JAX f32 (us/conf) | OpenMM CPU (us/conf) | "
           "OpenMM Reference (us/conf) | CPU / JAX | Reference / JAX | "
           "core-time CPU / JAX | core-time Reference / JAX |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['system']} | {r['n_atoms']} | {r['batch']} | "
                 f"{1e6 * r['jax_f32_s_per_conf']:.1f} | {1e6 * r['openmm_cpu_s_per_conf']:.1f} | "
                 f"{1e6 * r['openmm_reference_s_per_conf']:.1f} | {r['speedup_vs_cpu']:.2f} | "
                 f"{r['speedup_vs_reference']:.2f} | {r['cpu_time_ratio_vs_cpu']:.2f} | "
                 f"{r['cpu_time_ratio_vs_reference']:.2f} |")
  with open(args.out + ".md", "w") as f:
    f.write(f"Energy + forces per configuration; {meta}\n\n" + "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
