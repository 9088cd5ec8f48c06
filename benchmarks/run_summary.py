"""One line of figures per finished run folder (reverse and forward ESS, evidence, Ramachandran
TV with its floors, basins, chirality, cis peptide bonds, cost), as a Markdown table: the rows
of the per-seed tables in docs/molecules.md.

  .venv/bin/python benchmarks/run_summary.py runs/aldp_s1 benchmarks/results/aldp_refine_tr_s0

A folder holds ``metrics.json`` (with the peak memory and CPU seconds of the run's last sitting
in its ``timing``; for older runs, the peak memory from a ``time -v`` log given with
``--time-log FOLDER=LOG``).
"""

from __future__ import annotations

import argparse
import json
import os
import re


def _fmt(v, spec=".3f"):
  return "–" if v is None else format(v, spec)


def _peak_gb(log_path: str):
  if not log_path or not os.path.isfile(log_path):
    return None
  with open(log_path, errors="replace") as f:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
  return None if m is None else int(m.group(1)) / 1024 ** 2


def summary_row(folder: str, time_log: str = "") -> dict:
  """The figures of one run folder (None where a figure is absent)."""
  with open(os.path.join(folder, "metrics.json")) as f:
    m = json.load(f)
  t = m.get("timing", {})
  rew = m.get("basins_model_reweighted") or {}
  ref = m.get("basins_reference") or {}

  return {
      "run": folder, "target": m.get("target"), "seed": m.get("seed"),
      "target_evals": m.get("target_evals"), "reached_at_step": m.get("target_reached_at_step"),
      "reverse_ess": m.get("reverse_ess"), "reverse_ess_repeats": m.get("reverse_ess_repeats"),
      "reverse_ess_clipped": m.get("reverse_ess_clipped"), "forward_ess": m.get("forward_ess"),
      "forward_ess_without_top": m.get("forward_ess_without_top"),
      "forward_top_log_w_excess": m.get("forward_top_log_w_excess"),
      "log_z": m.get("log_z"), "log_z_se": m.get("log_z_se"),
      "log_z_forward": m.get("log_z_forward"), "eubo": m.get("eubo"), "elbo": m.get("elbo"),
      "tv36": m.get("ramachandran_tv_36"), "tv36_rew": m.get("ramachandran_tv_reweighted_36"),
      "tv36_floor_ref": m.get("ramachandran_tv_36_floor_reference"),
      "tv36_floor_model": m.get("ramachandran_tv_36_floor_model"),
      "energy_w1_rew": m.get("energy_w1_reweighted"),
      "energy_w1_capped": m.get("energy_w1_capped"),
      "energy_above_ref": m.get("energy_above_reference_fraction"),
      "phi_pos_rew": rew.get("phi_pos"), "phi_pos_ref": ref.get("phi_pos"),
      "beta_rew": rew.get("beta_C5"), "alphaR_rew": rew.get("alphaR"),
      "chirality_error_rate": m.get("chirality_error_rate"),
      "cis_rew": m.get("cis_peptide_fraction_reweighted"),
      "cis_ref": m.get("cis_peptide_fraction_reference"),
      "wall_s": t.get("total_seconds"), "train_s": t.get("training_seconds"),
      # a `time -v` log if given, else the run's own figure (runs since it was recorded)
      "peak_gb": _peak_gb(time_log) or t.get("process_peak_rss_gb"),
      "cpu_s": t.get("process_cpu_seconds"),
  }


def markdown(rows: list[dict]) -> str:
  head = ("| run | seed | evals | target at step | reverse ESS (repeats); clipped "
          "| forward ESS (without the top frame; its log-weight excess) "
          "| log Z rev / fwd; EUBO | Ram. TV 36² plain / rew. (floors ref, model) "
          "| φ>0 rew. (ref) | β / αR rew. | wrong-handed | cis peptide rew. (ref) "
          "| wall s (train) |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    reps = ", ".join(_fmt(v) for v in (r["reverse_ess_repeats"] or []))
    lines.append(
        f"| {r['run']} | {r['seed']} | {_fmt(r['target_evals'], '.3g')} | {r['reached_at_step']} "
        f"| {_fmt(r['reverse_ess'])} ({reps}); {_fmt(r['reverse_ess_clipped'])} "
        f"| {_fmt(r['forward_ess'], '.3g')} ({_fmt(r['forward_ess_without_top'])}; "
        f"{_fmt(r['forward_top_log_w_excess'], '.1f')}) | {_fmt(r['log_z'])} / {_fmt(r['log_z_forward'])}; "
        f"{_fmt(r['eubo'], '.2f')} | {_fmt(r['tv36'])} / {_fmt(r['tv36_rew'])} "
        f"({_fmt(r['tv36_floor_ref'])}, {_fmt(r['tv36_floor_model'])}) "
        f"| {_fmt(r['phi_pos_rew'], '.4f')} ({_fmt(r['phi_pos_ref'], '.4f')}) "
        f"| {_fmt(r['beta_rew'])} / {_fmt(r['alphaR_rew'])} | {_fmt(r['chirality_error_rate'], 'g')} "
        f"| {_fmt(r['cis_rew'], '.2g')} ({_fmt(r['cis_ref'], '.2g')}) "
        f"| {_fmt(r['wall_s'], '.0f')} ({_fmt(r['train_s'], '.0f')}) |")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("folders", nargs="+")
  ap.add_argument("--time-log", action="append", default=[], metavar="FOLDER=LOG")
  ap.add_argument("--json", help="also write the rows to this JSON file")
  args = ap.parse_args(argv)
  logs = dict(s.split("=", 1) for s in args.time_log)
  rows = [summary_row(f, logs.get(f, "")) for f in args.folders]
  print(markdown(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
