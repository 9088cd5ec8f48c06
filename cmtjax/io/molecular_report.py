"""The molecular part of a run's report: figures against reference samples, plots, trajectory.

``molecular_report`` draws model samples of a trained flow on a molecular target and writes, next
to the run's other outputs:

  ramachandran.png   (phi, psi) of the model, the importance-reweighted model and the reference
  energies.png       potential-energy histograms of the same three
  samples.dcd/.pdb   model samples (canonical frame, nm) as a trajectory mdtraj, VMD, PyMOL read

and returns the figures of ``cmtjax.metrics.molecular_figures`` (EUBO, NLL, forward ESS,
Ramachandran TV / KL plain and reweighted, energy W1 / W2, torus W2, chirality error rate,
cis peptide bonds)
plus, for alanine dipeptide, the basin populations of the reweighted model and the reference
(``basins_*``) and, for peptides of several residues, each residue's populations in the same
basins (``basins_*_per_pair``: model, reweighted model, reference).
Without reference samples only the model-side figures are returned (``reference: null``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import jax
import numpy as np

from cmtjax.metrics.molecular import (backbone_angles, chirality_error_rate, cis_peptide_bonds,
                                      cis_peptide_shares, molecular_figures)
from cmtjax.metrics.weights import normalised_weights
from cmtjax.sampling.chunks import draw_in_chunks, map_in_chunks

Array = jax.Array


def load_reference_positions(name: str, path: Optional[str] = None, *,
                             n_atoms: Optional[int] = None,
                             spec: Optional[str] = None) -> Optional[np.ndarray]:
  """A molecule's reference samples (``path``, else the cached or shipped set), or None when
  there are none; an explicit ``path`` that cannot be read is an error."""
  from cmtjax.targets.molecules.reference import load_reference_set
  found = _found_or_none(lambda: load_reference_set(name, path, n_atoms=n_atoms, spec=spec),
                         path)
  return None if found is None else found.positions


def _found_or_none(load, path):
  """``load()``; a missing reference set is None unless ``path`` named it explicitly."""
  try:
    return load()
  except FileNotFoundError:
    if path is not None:
      raise
    return None


def no_reference_note(spec: str, target=None, why: str = "") -> str:
  """What a report without reference samples says, and how to get some (the command carries
  the target's force field and temperature when they are not the defaults)."""
  flags = ""
  if target is not None:
    from cmtjax.targets.molecules.parameters import DEFAULT_FORCEFIELD_FILES
    files = list(target.info.get("forcefield_files", DEFAULT_FORCEFIELD_FILES))
    if files != list(DEFAULT_FORCEFIELD_FILES):
      flags += f" --forcefield {','.join(files)}"
    temperature = float(target.info.get("temperature", 300.0))
    if temperature != 300.0:
      flags += f" --t-min {temperature:g}"
  return (f"no reference samples{' (' + why + ')' if why else ''}: the figures against a "
          "reference (Ramachandran TV/KL, EUBO, NLL, forward ESS, energy W1) are not computed; "
          f"make a reference with `cmtjax reference --target {spec}{flags} --out REF.npz` and "
          "evaluate against it with `cmtjax evaluate --run DIR --reference REF.npz` (or train "
          "with --set eval.reference=REF.npz)")


def molecular_report(
    target,
    sample_and_log_prob: Optional[Callable[[Array, int], tuple[Array, Array]]],
    log_prob_fn: Optional[Callable[[Array], Array]],
    key: Optional[Array],
    n_samples: int,
    out_dir: Optional[str] = None,
    *,
    samples: Optional[tuple] = None,
    reference: Optional[np.ndarray] = None,
    reference_path: Optional[str] = None,
    chunk: int = 8192,
    title: str = "",
    held_out: Optional[Callable[[np.ndarray], Optional[np.ndarray]]] = None,
) -> dict[str, Any]:
  """Molecular figures, plots and a sample trajectory of a trained model.

  Args:
    target: a molecular ``Target`` (``target.molecule`` set).
    sample_and_log_prob: ``(key, n) -> (x: [n, 3N], log_q: [n])`` Cartesian samples and
      Cartesian log density.
    log_prob_fn: ``x: [n, 3N] -> [n]`` Cartesian log q (None: a sampler without a density;
      the forward figures, which need log q at the reference, are left out).
    key: PRNG key.
    n_samples: model samples.
    samples: ``(x [n, 3N], log_w [n])``, a weighted particle set to report instead of
      drawing from ``sample_and_log_prob`` (e.g. SMC's particles and their log weights).
    out_dir: folder for the plots and the trajectory (None: figures only).
    reference: [m, 3N] reference positions; default ``load_reference(target.name,
      reference_path)`` when one exists.
    reference_path: explicit reference file (an error if it cannot be read).
    chunk: samples per call of the sampler, the energy and the density.
    title: plot title prefix.
    held_out: ``walker [m] -> [m] bool or None``: the reference frames the model did not see
      in training (forward KL trains on reference frames); the forward figures (EUBO, NLL,
      forward ESS) are measured on those only. Needs a reference set read from a file.

  Returns:
    A flat dict of figures (see the module docstring); ``reference`` says where the
    reference came from (``null`` when there was none).
  """
  spec = target.molecule
  if spec is None:
    raise ValueError(f"target {target.name!r} is not a molecule")
  if samples is not None:
    x = np.asarray(samples[0])
    log_w = np.asarray(samples[1], np.float64)
  else:
    parts = list(draw_in_chunks(sample_and_log_prob, key, n_samples, chunk))
    x = np.concatenate([np.asarray(p[0]) for p in parts])
    log_q = np.concatenate([np.asarray(p[1]) for p in parts])
    log_w = map_in_chunks(target.log_prob, x, chunk) - log_q
  energy = map_in_chunks(spec.energy, x, chunk)
  from cmtjax.targets.molecules.reference import (load_target_reference, reference_mismatch,
                                                  shipped_molecule)
  shipped = shipped_molecule(target)
  spec_name = shipped or spec.pdb_path
  blocks, found, why = None, None, ""
  if reference is None:
    found = _found_or_none(lambda: load_target_reference(target, reference_path),
                           reference_path)
    mismatch = None if found is None else reference_mismatch(found, target)
    if mismatch is not None:
      if reference_path is not None:
        raise ValueError(f"reference {reference_path}: {mismatch}")
      found, why = None, f"{mismatch}: not used"
    reference = None if found is None else found.positions
    blocks = None if found is None else found.walker
    source = reference_path or (None if found is None else found.path)
  else:
    source = "given"
  figures: dict[str, Any] = {"reference": source, "n_model_samples": int(len(x))}
  if reference is None:
    figures["reference_note"] = no_reference_note(spec_name, target, why)
  top = spec.topology
  if reference is None:
    figures["chirality_error_rate"] = chirality_error_rate(x, spec.chiral_centres,
                                                           spec.chirality)
    cis = cis_peptide_bonds(x, top)  # the model's share of cis peptide bonds, as with one
    for sfx, w in (("", None), ("_reweighted", normalised_weights(log_w))):
      figures[f"cis_peptide_fraction{sfx}"], figures[f"cis_peptide_fraction{sfx}_per_bond"] = (
          cis_peptide_shares(cis, w))
  else:
    x_ref = np.asarray(reference, np.float32)
    e_ref = map_in_chunks(spec.energy, x_ref, chunk)
    log_p_ref = map_in_chunks(target.log_prob, x_ref, chunk)
    log_q_ref = (map_in_chunks(log_prob_fn, x_ref, chunk) if log_prob_fn is not None
                 else np.full(len(x_ref), np.nan))
    compact = found is not None and found.all_angles is not None
    if compact:  # every frame's angles and energies; coordinates of a decorrelated subset
      blocks = found.all_walker
      figures["n_reference_frames"] = int(found.all_angles.shape[0])
    forward_mask = None
    if held_out is not None:
      if found is None:
        raise ValueError("held_out needs a reference set read from a file (frames of walkers)")
      forward_mask = held_out(np.asarray(found.walker))
      if forward_mask is not None:
        figures["forward_figures_on"] = "reference frames held out of training"
    figures.update(molecular_figures(
        x, log_w, energy, x_ref, log_p_ref, log_q_ref, e_ref, top,
        reference_signs=spec.chirality, ref_blocks=blocks,
        ref_angles_all=found.all_angles if compact else None,
        e_ref_all=found.all_energies if compact else None, forward_mask=forward_mask))
    if log_prob_fn is None:  # no model density: no forward figures
      for k in ("eubo", "nll", "forward_ess", "forward_ess_without_top",
                "forward_top_log_w_excess", "log_z_forward", "n_ref_outside_support",
                "n_ref_nonfinite"):
        figures.pop(k, None)
  w = np.asarray(normalised_weights(log_w))
  angles = backbone_angles(x, top)
  ref_angles = None if reference is None else backbone_angles(reference, top)
  ref_energies = None
  if found is not None and found.all_angles is not None:
    ref_angles, ref_energies = np.asarray(found.all_angles, np.float64), found.all_energies
  if shipped == "aldp" and angles.shape[1] == 1:
    from cmtjax.metrics.basins import aldp_basin_populations
    figures["basins_model"] = aldp_basin_populations(angles[:, 0, 0], angles[:, 0, 1])
    figures["basins_model_reweighted"] = aldp_basin_populations(angles[:, 0, 0],
                                                                angles[:, 0, 1], w)
    if ref_angles is not None:
      figures["basins_reference"] = aldp_basin_populations(ref_angles[:, 0, 0],
                                                           ref_angles[:, 0, 1])
  elif angles.shape[1] > 1:  # peptides: each residue's (φ, ψ) in the same basins
    from cmtjax.metrics.basins import aldp_basin_populations
    per_pair = lambda a, wts=None: [aldp_basin_populations(a[:, r, 0], a[:, r, 1], wts)  # noqa: E731
                                    for r in range(a.shape[1])]
    figures["basins_model_per_pair"] = per_pair(angles)
    figures["basins_model_reweighted_per_pair"] = per_pair(angles, w)
    if ref_angles is not None and ref_angles.shape[1] == angles.shape[1]:
      figures["basins_reference_per_pair"] = per_pair(ref_angles)
  if out_dir is not None:
    from cmtjax.io.molecular_plots import plot_energy_histograms, plot_ramachandran
    from cmtjax.io.trajectory import save_trajectory
    if ref_angles is not None:
      plot_ramachandran(os.path.join(out_dir, "ramachandran.png"), angles, ref_angles,
                        model_weights=w, pairs="all", title=title)
      plot_energy_histograms(os.path.join(out_dir, "energies.png"), energy,
                             ref_energies if ref_energies is not None else
                             map_in_chunks(spec.energy, np.asarray(reference, np.float32), chunk),
                             model_weights=w, title=title)
    else:  # no reference: the model against its own reweighting
      plot_ramachandran(os.path.join(out_dir, "ramachandran.png"), angles, angles,
                        model_weights=w, pairs="all",
                        titles=("model", "model, reweighted", "model (no reference)"),
                        title=title)
      plot_energy_histograms(os.path.join(out_dir, "energies.png"), energy, None,
                             model_weights=w, title=title)
    save_trajectory(os.path.join(out_dir, "samples"), x, spec.pdb_path, max_frames=2000)
  return figures
