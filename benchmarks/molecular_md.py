"""Alanine dipeptide Langevin MD: the JAX force field (cmtjax BAOAB) against OpenMM.

Both sides run the same number of independent chains of the same length from the shipped
energy-minimised structure, with the same settings: BAOAB Langevin (OpenMM's
LangevinMiddleIntegrator; cmtjax.sampling.langevin), 300 K, friction 1/ps, time step 1 fs, no
constraints, no centre-of-mass motion removal. Reported: mean potential energy and mean kinetic
temperature (2 KE / (3 N k_B), from the half-step momenta on both sides) after discarding the
first --equilibration ps, with standard errors from the spread of the per-chain means (chains
are independent).

  python benchmarks/molecular_md.py                 # 8 chains x 100 ps
  python benchmarks/molecular_md.py --chains 4 --length-ps 20

Writes benchmarks/molecular_md.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from cmtjax.targets.molecules import MOLAR_GAS_CONSTANT, create_openmm_system, load_molecular_system
from cmtjax.targets.molecules.md import langevin_md

HERE = os.path.dirname(os.path.abspath(__file__))


def _summary(n_skip, **series):
  """series: name -> [n_frames, n_chains]; means and standard errors over chain means."""
  out = {}
  for name, x in series.items():
    per_chain = x[n_skip:].mean(axis=0)
    out[f"{name}_mean"] = float(per_chain.mean())
    out[f"{name}_se"] = float(per_chain.std(ddof=1) / np.sqrt(len(per_chain)))
  return out


def run_openmm(pdb_path, n_chains, n_steps, save_every, temperature, dt, friction, platform,
               seed):
  import openmm  # pylint: disable=g-import-not-at-top
  from openmm import unit  # pylint: disable=g-import-not-at-top

  system, _, positions = create_openmm_system(pdb_path)
  n_atoms = system.getNumParticles()
  pe = np.zeros((n_steps // save_every, n_chains))
  temp = np.zeros_like(pe)
  for c in range(n_chains):
    integrator = openmm.LangevinMiddleIntegrator(temperature, friction, dt)
    integrator.setRandomNumberSeed(seed + c + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(temperature, seed + c + 1)
    for f in range(n_steps // save_every):
      integrator.step(save_every)
      state = context.getState(getEnergy=True)
      pe[f, c] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
      ke = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
      temp[f, c] = 2.0 * ke / (3 * n_atoms * MOLAR_GAS_CONSTANT)
  return pe, temp


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--system", default="aldp")
  parser.add_argument("--chains", type=int, default=8)
  parser.add_argument("--length-ps", type=float, default=100.0)
  parser.add_argument("--equilibration-ps", type=float, default=10.0)
  parser.add_argument("--dt", type=float, default=0.001, help="ps")
  parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
  parser.add_argument("--temperature", type=float, default=300.0)
  parser.add_argument("--save-every", type=int, default=100)
  parser.add_argument("--platform", default="Reference",
                      help="OpenMM platform (Reference: fastest per step for 22 atoms here)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(HERE, "molecular_md"))
  args = parser.parse_args()

  n_steps = int(round(args.length_ps / args.dt / args.save_every)) * args.save_every
  n_skip = int(round(args.equilibration_ps / (args.dt * args.save_every)))
  system = load_molecular_system(args.system, temperature=args.temperature)

  t0 = time.perf_counter()
  traj = langevin_md(system, jax.random.key(args.seed), n_steps=n_steps,
                     save_every=args.save_every, n_chains=args.chains, dt=args.dt,
                     friction=args.friction)
  pe_jax = np.asarray(traj.potential_energy, np.float64)
  t_jax = np.asarray(traj.temperature_mid, np.float64)
  t_full_jax = np.asarray(traj.temperature, np.float64)
  jax_s = time.perf_counter() - t0

  t0 = time.perf_counter()
  pe_omm, t_omm = run_openmm(system.pdb_path, args.chains, n_steps, args.save_every,
                             args.temperature, args.dt, args.friction, args.platform, args.seed)
  omm_s = time.perf_counter() - t0

  res = {"settings": vars(args) | {"n_steps": n_steps, "n_skip_frames": n_skip},
         "jax": _summary(n_skip, pe=pe_jax, t=t_jax, t_full_step=t_full_jax)
                | {"wall_s_incl_compile": jax_s},
         "openmm": _summary(n_skip, pe=pe_omm, t=t_omm) | {"wall_s": omm_s}}
  for k in ("pe", "t"):
    diff = res["jax"][f"{k}_mean"] - res["openmm"][f"{k}_mean"]
    se = np.hypot(res["jax"][f"{k}_se"], res["openmm"][f"{k}_se"])
    res[f"{k}_diff"] = float(diff)
    res[f"{k}_diff_in_se"] = float(diff / se)
  with open(args.out + ".json", "w") as f:
    json.dump(res, f, indent=1)
  table = [
    f"{args.system}: {args.chains} chains x {args.length_ps} ps, dt {args.dt} ps, friction "
    f"{args.friction}/ps, {args.temperature} K, first {args.equilibration_ps} ps discarded",
    "",
    "| | mean potential energy (kJ/mol) | mean temperature (K) | wall (s) |",
    "|---|---|---|---|",
    f"| JAX (cmtjax BAOAB, float32) | {res['jax']['pe_mean']:.2f} ± {res['jax']['pe_se']:.2f} | "
    f"{res['jax']['t_mean']:.2f} ± {res['jax']['t_se']:.2f} | {jax_s:.1f} (incl. compile) |",
    f"| OpenMM {args.platform} (LangevinMiddle) | {res['openmm']['pe_mean']:.2f} ± "
    f"{res['openmm']['pe_se']:.2f} | {res['openmm']['t_mean']:.2f} ± {res['openmm']['t_se']:.2f} "
    f"| {omm_s:.1f} |",
    f"| difference (in combined SE) | {res['pe_diff']:.2f} ({res['pe_diff_in_se']:.1f}) | "
    f"{res['t_diff']:.2f} ({res['t_diff_in_se']:.1f}) | |",
    "",
    "Temperatures from the half-step momenta (after the friction/noise step), which is what "
    "OpenMM's LangevinMiddleIntegrator reports. The JAX full-step temperature (after the last "
    f"half kick) is {res['jax']['t_full_step_mean']:.2f} ± {res['jax']['t_full_step_se']:.2f} K "
    "(BAOAB's full-step momenta run cold by O(dt^2)).",
  ]
  with open(args.out + ".md", "w") as f:
    f.write("\n".join(table) + "\n")
  print("\n".join(table))


if __name__ == "__main__":
  main()
