"""Generates equilibrium reference samples of a molecule by replica-exchange MD: the
``cmtjax reference`` command (``experiments/molecules/generate_reference.py`` is the same).

The molecule is any molecular target spec: a shipped one (``aldp``, ``ala4``, ``ala6``,
``elil``) or a PDB file (``--forcefield`` picks the force-field files). Writes ``--out``
(default ``$CMTJAX_DATA/reference/<name>.npz``, where training looks for it) and a JSON
summary next to
it (``<out>.json``: protocol, cost, swap acceptances, mean energies per temperature, and for
alanine dipeptide the basin populations with walker-block error bars). With ``--ship PATH`` it
also writes a thinned copy (``--ship-frames`` frames spread evenly over every walker), the small
set shipped in the package.

The run is resumable: it checkpoints after every jitted call (``--checkpoint``, by default a
folder next to ``--out``), and the same command started again after an interruption continues
where it stopped, giving the frames an uninterrupted run would.

Examples (the shipped alanine-dipeptide files, see experiments/molecules/REFERENCE.md; a
molecule of your own):

  nice -n 10 cmtjax reference --target aldp --ship cmtjax/targets/molecules/data/aldp_reference.npz
  cmtjax reference --target my.pdb --out my_reference.npz --walkers 8 --steps 50000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np

# jax, OpenMM and the samplers are imported when a generation starts: `cmtjax --help` (which
# lists these options) stays light.


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """The options of ``cmtjax reference``."""
  p.add_argument("--target", "--system", dest="target", default="aldp",
                 help="aldp | ala4 | ala6 | elil | path/to/molecule.pdb (default aldp)")
  p.add_argument("--forcefield", default=None,
                 help="PDB targets: comma-separated OpenMM force-field files (default "
                      "amber99sbildn.xml,amber99_obc.xml)")
  p.add_argument("--out", default=None,
                 help="output .npz (default $CMTJAX_DATA/reference/<name>.npz)")
  p.add_argument("--walkers", type=int, default=32, help="independent replica ladders")
  p.add_argument("--temperatures", default=None,
                 help="comma-separated ladder in K (overrides --t-min/--t-max/--n-replicas)")
  p.add_argument("--t-min", type=float, default=300.0, help="sampled temperature, K")
  p.add_argument("--t-max", type=float, default=700.0, help="hottest replica, K")
  p.add_argument("--n-replicas", type=int, default=6, help="geometric ladder size")
  p.add_argument("--steps", type=int, default=140_000, help="production MD steps")
  p.add_argument("--burn-in", type=int, default=10_000, help="discarded MD steps")
  p.add_argument("--save-every", type=int, default=200, help="steps between saved frames")
  p.add_argument("--swap-every", type=int, default=100, help="steps between swap rounds")
  p.add_argument("--dt", type=float, default=0.001, help="time step, ps")
  p.add_argument("--friction", type=float, default=1.0, help="Langevin friction, 1/ps")
  p.add_argument("--precision", default="float32", choices=("float32", "float64"))
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--frames-per-call", type=int, default=50,
                 help="frames per jitted call (progress is printed after each)")
  p.add_argument("--checkpoint", default=None,
                 help="checkpoint folder, written after every call; a run started again with "
                      "the same settings continues from it, --steps may differ (ends a long "
                      "generation early with the frames it has, or extends it) (default: <out "
                      "without .npz>_checkpoint/, removed once the reference is written)")
  p.add_argument("--keep-checkpoint", action="store_true",
                 help="keep the checkpoint folder after the reference is written")
  p.add_argument("--ship", default=None, help="also write a thinned set to this .npz")
  p.add_argument("--ship-frames", type=int, default=4000, help="frames in the thinned set")
  p.add_argument("--compact", default=None,
                 help="also write a compact set to this .npz: backbone dihedrals and energies "
                      "of every frame, coordinates of a decorrelated subset (what the metrics "
                      "need, small enough for git)")
  p.add_argument("--compact-frames", type=int, default=20_000,
                 help="most frames with coordinates in the compact set (default 20000)")
  p.add_argument("--compact-from", default=None, metavar="FULL.npz[,FULL2.npz...]",
                 help="run no MD: write --compact from existing full reference sets (several "
                      "independent runs, comma-separated, are pooled; their walkers stay "
                      "separate blocks)")
  return p


def _parse_args(argv=None) -> argparse.Namespace:
  return add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args(
      argv)


def molecular_system_for(spec: str, *, temperature: float, precision: str,
                         forcefield_files=None):
  """The ``MolecularSystem`` of a shipped molecule or of a PDB file.

  Raises:
    ValueError: a spec that is not a molecule, or force-field files for a shipped one.
  """
  from cmtjax.targets.molecules import load_molecular_system, make_molecular_system
  from cmtjax.targets.molecules.systems import MOLECULAR_SYSTEMS
  from cmtjax.targets.registry import resolve_target_spec, target_kind
  kwargs = dict(temperature=temperature, precision=precision)
  if forcefield_files:
    kwargs["forcefield_files"] = tuple(forcefield_files)
  if spec in MOLECULAR_SYSTEMS:
    return load_molecular_system(spec, **kwargs)
  if target_kind(spec) != "pdb":
    raise ValueError(f"reference samples are made for molecules: a shipped one "
                     f"({', '.join(MOLECULAR_SYSTEMS)}) or a PDB file, not {spec!r}")
  return make_molecular_system(resolve_target_spec(spec), **kwargs)


def _omega_indices(top) -> np.ndarray:
  """[n, 4] atoms of the peptide-bond dihedrals CA(r)-C(r)-N(r+1)-CA(r+1), caps included."""
  rows = []
  for r in range(top.n_residues - 1):
    a = top.find(r, "CA") if top.find(r, "CA") is not None else top.find(r, "CH3")
    b, c = top.find(r, "C"), top.find(r + 1, "N")
    d = top.find(r + 1, "CA")
    if d is None and top.residue_names[list(top.residue_index).index(r + 1)] == "NME":
      d = top.find(r + 1, "C")
    if None not in (a, b, c, d):
      rows.append((a, b, c, d))
  return np.asarray(rows, np.int32).reshape(-1, 4)


def _structure_checks(system, positions) -> dict:
  """Fractions of frames with a cis peptide bond (|omega| < 90 deg) or a mirrored C-alpha."""
  from cmtjax.targets.molecules.topology import (chiral_centres, chirality_signs,
                                                 dihedral_angles, load_topology,
                                                 wrong_chirality)
  top = load_topology(system.pdb_path)
  out = {}
  omega_idx = _omega_indices(top)
  if omega_idx.size:
    omega = np.asarray(dihedral_angles(positions, omega_idx))
    out["cis_peptide_fraction"] = float(np.mean(np.any(np.abs(omega) < np.pi / 2, axis=1)))
    out["n_peptide_bonds"] = int(omega_idx.shape[0])
  centres = chiral_centres(top)
  if centres.size:
    signs = chirality_signs(system.positions.reshape(1, -1), centres)[0]
    out["wrong_chirality_fraction"] = float(np.mean(np.asarray(
      wrong_chirality(positions, centres, signs))))
  return out


def _block_mean(values: np.ndarray, blocks: np.ndarray) -> dict:
  labels = np.unique(blocks)
  per = np.array([values[blocks == b].mean() for b in labels])
  return {"mean": float(values.mean()),
          "stderr": float(per.std(ddof=1) / np.sqrt(labels.size)) if labels.size > 1 else None}


def _thin(result, n_frames: int) -> np.ndarray:
  """Indices of ``n_frames // n_walkers`` frames per walker, evenly spread in time."""
  return _thin_walkers(result.walker, n_frames)


def _thin_walkers(walker: np.ndarray, n_frames: int) -> np.ndarray:
  walkers = np.unique(walker)
  per = max(1, n_frames // walkers.size)
  idx = []
  for w in walkers:
    rows = np.flatnonzero(walker == w)
    take = np.unique(np.round(np.linspace(0, rows.size - 1, min(per, rows.size))).astype(int))
    idx.append(rows[take])
  return np.concatenate(idx)


def _describe(system, positions, energies, walker, frame_ps=None, angles=None) -> dict:
  """Size, mean energy, structure checks, decorrelation of the backbone dihedrals (effective
  samples; only meaningful for time-ordered frames) and, for alanine dipeptide, the basin
  populations with walker-block errors.

  ``angles`` ([N, n_pairs, 2] backbone (φ, ψ) of the N frames of ``energies`` and ``walker``)
  describes a compact set, whose ``positions`` are a subset of its frames: the structure
  checks then run on that subset, every other figure on all frames.
  """
  angles = _backbone_angles(system, positions) if angles is None else np.asarray(angles)
  out = {"n_frames": int(angles.shape[0]),
         "energy_kj_mol": _block_mean(np.asarray(energies, np.float64), walker),
         **_structure_checks(system, positions)}
  if positions.shape[0] != angles.shape[0]:
    out["structure_checks_on_frames"] = int(positions.shape[0])
  if angles.shape[1]:
    out.update(_describe_angles(system.name, angles, np.asarray(walker), frame_ps))
  return out


def _backbone_angles(system, positions) -> np.ndarray:
  """Backbone (φ, ψ) [N, n_pairs, 2] (float32) of the frames ``positions`` of ``system``."""
  from cmtjax.metrics.molecular import backbone_angles
  from cmtjax.targets.molecules.topology import load_topology
  return np.asarray(backbone_angles(positions, load_topology(system.pdb_path)), np.float32)


def _describe_angles(name: str, angles: np.ndarray, walker: np.ndarray, frame_ps) -> dict:
  """Decorrelation, half-vs-half Ramachandran TV per binning and basin populations of the
  backbone (φ, ψ) ``angles`` [N, n_pairs, 2] of frames from the walkers ``walker`` [N]."""
  from cmtjax.metrics.autocorrelation import dihedral_decorrelation
  from cmtjax.metrics.basins import aldp_basin_populations_by_block
  from cmtjax.metrics.molecular import (RAMACHANDRAN_BINS, ramachandran_divergences,
                                        split_tv_spread)
  out = {}
  phi, psi = angles[:, :, 0], angles[:, :, 1]
  names = [f"{a}{i}" for i in range(phi.shape[1]) for a in ("phi", "psi")]
  try:
    out["decorrelation"] = dihedral_decorrelation(angles.reshape(angles.shape[0], -1), walker,
                                                  names, frame_ps)
  except ValueError as e:  # too few frames per walker to estimate
    out["decorrelation"] = {"error": str(e)}
  # The noise floor of the Ramachandran figures this set can support: TV between two halves
  # (alternate walkers), per binning, mean over backbone pairs and per pair.
  out["half_vs_half_tv"], out["half_vs_half_tv_per_pair"] = {}, {}
  for b in RAMACHANDRAN_BINS:
    d = ramachandran_divergences(angles, angles, ref_blocks=walker, bins=b)
    out["half_vs_half_tv"][f"{b}x{b}"] = d["tv_floor_reference"]
    out["half_vs_half_tv_per_pair"][f"{b}x{b}"] = d["tv_floor_reference_per_pair"]
  if np.unique(walker).size >= 4:  # how much that one split's figure is luck of the draw
    out["half_vs_half_tv_random_splits"] = {
        f"{b}x{b}": split_tv_spread(angles, walker, bins=b) for b in RAMACHANDRAN_BINS}
  if name == "aldp":
    out["basin_populations"] = aldp_basin_populations_by_block(phi[:, 0], psi[:, 0], walker)
  elif phi.shape[1] > 1:  # a longer peptide: the same basins, residue by residue
    out["basin_populations_per_residue"] = [
        aldp_basin_populations_by_block(phi[:, i], psi[:, i], walker)
        for i in range(phi.shape[1])]
  return out


def write_compact(system, positions, energies, walker, temperature: float, protocol: dict,
                  out: str, max_frames: int, frame_ps=None, angles=None) -> dict:
  """Writes the compact set of a full reference: (φ, ψ) and energy of every frame, and the
  coordinates of frames spread evenly over each walker, one per integrated autocorrelation
  time of the slowest backbone dihedral (at most ``max_frames``). Returns its description.
  ``angles``: the frames' backbone (φ, ψ) where the caller has them already."""
  from cmtjax.metrics.autocorrelation import dihedral_decorrelation
  from cmtjax.targets.molecules import reference as ref
  angles = (_backbone_angles(system, positions) if angles is None
            else np.asarray(angles, np.float32))  # [N, n_pairs, 2]
  decorrelation = dihedral_decorrelation(angles.reshape(angles.shape[0], -1), walker,
                                         frame_ps=frame_ps)
  n_sub = int(min(max_frames, max(np.unique(walker).size, decorrelation["effective_samples"])))
  idx = _thin_walkers(np.asarray(walker), n_sub)
  compact_protocol = dict(protocol, compact={
      "frames": int(positions.shape[0]), "frames_with_coordinates": int(idx.size),
      "selection": "frames evenly spread over each walker, about one per integrated "
                   "autocorrelation time of the slowest backbone dihedral",
      "tau_max_frames": decorrelation["tau_max_frames"]})
  ref.save_reference(out, name=system.name, positions=positions[idx], energies=energies[idx],
                     walker=np.asarray(walker)[idx], temperature=temperature,
                     protocol=compact_protocol, all_angles=angles, all_energies=energies,
                     all_walker=walker)
  return {"file": out, "bytes": os.path.getsize(out), "frames": int(positions.shape[0]),
          "frames_with_coordinates": int(idx.size), "decorrelation": decorrelation}


def _compact_only(args) -> dict:
  """``--compact-from``: pools independent runs (full sets, or compact sets such as the pieces
  of a long generation made in separate sittings) into one compact set."""
  from cmtjax.targets.molecules import reference as ref
  runs = [ref.load_reference_set("reference", path) for path in args.compact_from.split(",")]
  if len({r.temperature for r in runs}) > 1:
    raise ValueError(f"--compact-from: the sets have different temperatures "
                     f"{[r.temperature for r in runs]}")
  kinds = {r.all_angles is not None for r in runs}
  if len(kinds) > 1:
    compact = ", ".join(os.path.basename(r.path) for r in runs if r.all_angles is not None)
    raise ValueError(f"--compact-from: pool either full sets or compact sets, not both "
                     f"({compact} are compact); compact the full ones first")
  system = molecular_system_for(
      args.target, temperature=runs[0].temperature, precision=args.precision,
      forcefield_files=args.forcefield.split(",") if args.forcefield else None)
  for r in runs:
    if r.positions.shape[1] != 3 * system.n_atoms:
      raise ValueError(f"--compact-from: {r.path} holds {r.positions.shape[1] // 3} atoms, "
                       f"{args.target!r} has {system.n_atoms}")
  # Every run's walkers become blocks of their own.
  offsets, offset = [], 0
  for r in runs:
    labels = r.walker if r.all_walker is None else r.all_walker
    offsets.append(offset - int(labels.min()))
    offset += int(labels.max()) - int(labels.min()) + 1
  protocol = runs[0].protocol if len(runs) == 1 else dict(
      runs[0].protocol, pooled_runs=[r.protocol for r in runs])
  protocol = dict(protocol, compacted_from=[os.path.basename(r.path) for r in runs])
  positions = np.concatenate([r.positions for r in runs])
  energies = np.concatenate([r.energies for r in runs])
  walker = np.concatenate([r.walker + o for r, o in zip(runs, offsets)])
  frame_ps = None
  if {"save_every", "dt_ps"} <= set(runs[0].protocol):
    frame_ps = float(runs[0].protocol["save_every"]) * float(runs[0].protocol["dt_ps"])
  if runs[0].all_angles is None:
    angles = _backbone_angles(system, positions)
    compact = write_compact(system, positions, energies, walker, runs[0].temperature, protocol,
                            args.compact, args.compact_frames, frame_ps, angles=angles)
    described = _describe(system, positions, energies, walker, frame_ps=frame_ps,
                          angles=angles)
  else:
    compact, described = _pool_compact(system, runs, offsets, protocol, args, frame_ps,
                                       positions, energies, walker)
  summary = {"compact": compact, "reference": described}
  summary_path = os.path.splitext(args.compact)[0] + ".json"
  with open(summary_path, "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps(summary, indent=1))
  print(f"wrote {args.compact}, {summary_path}")
  return summary


def _pool_compact(system, runs, offsets, protocol, args, frame_ps, positions, energies,
                  walker) -> tuple[dict, dict]:
  """Writes the pool of compact sets ``runs`` (walker labels shifted by ``offsets``): every
  frame's angles and energies, and the frames with coordinates of every set (``positions``,
  ``energies``, ``walker``: those frames pooled), thinned evenly per walker to at most
  ``--compact-frames``. Returns the compact and reference summaries."""
  from cmtjax.targets.molecules import reference as ref
  angles = np.concatenate([r.all_angles for r in runs])
  if len({a.shape[1:] for a in (r.all_angles for r in runs)}) > 1:
    raise ValueError("--compact-from: the sets have different numbers of backbone pairs")
  all_energies = np.concatenate([r.all_energies for r in runs])
  all_walker = np.concatenate([r.all_walker + o for r, o in zip(runs, offsets)])
  idx = np.arange(positions.shape[0])
  if idx.size > args.compact_frames:
    idx = _thin_walkers(walker, args.compact_frames)
  taus = [r.protocol.get("compact", {}).get("tau_max_frames") for r in runs]
  protocol = dict(protocol, compact={
      "frames": int(angles.shape[0]), "frames_with_coordinates": int(idx.size),
      "selection": "the pooled sets' frames with coordinates"
                   + (", thinned evenly per walker" if idx.size < positions.shape[0] else ""),
      "tau_max_frames": max((t for t in taus if t is not None), default=None)})
  ref.save_reference(args.compact, name=system.name, positions=positions[idx],
                     energies=energies[idx], walker=walker[idx],
                     temperature=runs[0].temperature, protocol=protocol, all_angles=angles,
                     all_energies=all_energies, all_walker=all_walker)
  described = _describe(system, positions[idx], all_energies, all_walker, frame_ps=frame_ps,
                        angles=angles)
  compact = {"file": args.compact, "bytes": os.path.getsize(args.compact),
             "frames": int(angles.shape[0]), "frames_with_coordinates": int(idx.size),
             "decorrelation": described.get("decorrelation")}
  return compact, described


def main(argv=None) -> dict:
  return generate(_parse_args(argv), argv)


def generate(args: argparse.Namespace, argv=None) -> dict:
  """Runs the generation described by ``args`` (see :func:`add_arguments`); returns the
  summary written next to the output."""
  if args.precision == "float64":
    import jax
    jax.config.update("jax_enable_x64", True)
  if args.compact_from:
    if not args.compact:
      raise ValueError("--compact-from needs --compact OUT.npz")
    return _compact_only(args)
  import jax

  from cmtjax.sampling.replica_exchange import replica_exchange
  from cmtjax.sampling.temperatures import geometric_ladder
  from cmtjax.targets.molecules import reference as ref
  if args.temperatures:
    temperatures = np.array([float(t) for t in args.temperatures.split(",")])
  else:
    temperatures = geometric_ladder(args.t_min, args.t_max, args.n_replicas)
  system = molecular_system_for(
      args.target, temperature=float(temperatures[0]), precision=args.precision,
      forcefield_files=args.forcefield.split(",") if args.forcefield else None)
  out = args.out or ref.cached_reference_path(ref.reference_key(system.target))
  print(f"{system.name}: {system.n_atoms} atoms; T = {np.round(temperatures, 1).tolist()} K; "
        f"{args.walkers} walkers x {temperatures.size} replicas; {args.burn_in} + {args.steps} "
        f"steps of {args.dt * 1e3:g} fs -> {out}", flush=True)

  checkpoint = args.checkpoint or os.path.splitext(out)[0] + "_checkpoint"
  if os.path.isfile(os.path.join(checkpoint, "meta.json")):
    print(f"continuing from the checkpoint in {checkpoint}", flush=True)

  def progress(info):
    acc = " ".join(f"{a:.2f}" for a in info["swap_acceptance"])
    print(f"  {info['phase']:>10} {info['step']:>8}/{info['n_steps']} steps  "
          f"{info['wall_s']:7.0f} s  swap acceptance [{acc}]", flush=True)

  result = replica_exchange(
    system, jax.random.key(args.seed), temperatures=temperatures, n_walkers=args.walkers,
    n_steps=args.steps, burn_in=args.burn_in, save_every=args.save_every,
    swap_every=args.swap_every, dt=args.dt, friction=args.friction,
    frames_per_call=args.frames_per_call, progress=progress, checkpoint=checkpoint)
  with open(system.pdb_path, "rb") as f:
    pdb_sha256 = hashlib.sha256(f.read()).hexdigest()
  protocol = dict(result.protocol, seed=args.seed, pdb=system.pdb_path, pdb_sha256=pdb_sha256,
                  forcefield_files=list(system.forcefield_files),
                  command="python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
                  if argv is None else "main(" + repr(argv) + ")",
                  created=time.strftime("%Y-%m-%d %H:%M:%S %z"))
  ref.save_reference(out, name=system.name, positions=result.positions,
                     energies=result.energies, walker=result.walker,
                     temperature=result.temperature, protocol=protocol)
  angles = _backbone_angles(system, result.positions)
  summary = {
    "file": out,
    "protocol": protocol,
    "cost": {k: protocol[k] for k in ("wall_seconds", "cpu_seconds", "energy_evaluations")},
    "swap_acceptance": result.swap_acceptance.tolist(),
    "swap_probability": result.swap_probability.tolist(),
    "round_trips_per_walker": result.round_trips_per_walker,
    "mean_energy_per_temperature": result.mean_energies.tolist(),
    "kinetic_temperature_per_slot": result.kinetic_temperature.tolist(),
    "reference": _describe(system, result.positions, result.energies, result.walker,
                           frame_ps=args.save_every * args.dt, angles=angles),
  }
  if args.ship:
    idx = _thin(result, args.ship_frames)
    ship_protocol = dict(protocol, thinned_from=os.path.basename(out),
                         thinning="frames evenly spread over each walker's production run",
                         n_frames=int(idx.size))
    ref.save_reference(args.ship, name=system.name, positions=result.positions[idx],
                       energies=result.energies[idx], walker=result.walker[idx],
                       temperature=result.temperature, protocol=ship_protocol)
    summary["shipped"] = {"file": args.ship, "bytes": os.path.getsize(args.ship),
                          **_describe(system, result.positions[idx], result.energies[idx],
                                      result.walker[idx])}
  if args.compact:
    summary["compact"] = write_compact(system, result.positions, result.energies, result.walker,
                                       result.temperature, protocol, args.compact,
                                       args.compact_frames, args.save_every * args.dt,
                                       angles=angles)
  if not args.keep_checkpoint:
    shutil.rmtree(checkpoint, ignore_errors=True)
  summary_path = os.path.splitext(out)[0] + ".json"
  with open(summary_path, "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps({k: summary[k] for k in ("cost", "swap_acceptance",
                                            "round_trips_per_walker", "reference")}, indent=1))
  print(f"wrote {out}, {summary_path}" + (f", {args.ship}" if args.ship else ""))
  return summary


if __name__ == "__main__":
  main()
