"""Markdown table of the pieces of a reference generated in pieces, one column per piece, from
the summaries that ``cmtjax reference`` wrote next to them.

  python experiments/molecules/pieces_table.py experiments/molecules/reference_pieces/elil_s*.json

(the table of the ELIL section of experiments/molecules/REFERENCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

BASINS = (("beta_C5", "β/C5"), ("C7eq_PII", "C7eq/PII"), ("alphaR", "αR"), ("phi_pos", "φ > 0"))


def _fmt(x: float, digits: int = 2) -> str:
  return f"{x:.{digits}f}".replace("-", "−")


def column(summary: dict) -> dict[str, str]:
  """The rows of one piece's column (row title -> cell)."""
  p, ref = summary["protocol"], summary["reference"]
  dec = ref.get("decorrelation", {})
  cells = {
      "seed": str(p.get("seed")),
      "walkers × simulated time (burn-in included)":
          f"{p['n_walkers']} × {p['simulated_time_per_replica_ps']:g} ps",
      "cost (CPU-s / wall s)": f"{summary['cost']['cpu_seconds']:,.0f} / "
                               f"{summary['cost']['wall_seconds']:,.0f}",
      "swap acceptance": ", ".join(_fmt(a) for a in summary["swap_acceptance"]),
      "round trips per walker": f"{summary['round_trips_per_walker']:.1f}",
      "frames": f"{ref['n_frames']:,}",
      "slowest τ": (f"{dec['slowest']} {dec['tau_max_ps']:.1f} ps" if "tau_max_ps" in dec
                    else "–"),
      "effective samples": f"{dec['effective_samples']:.0f}" if "effective_samples" in dec
                           else "–",
      "half-vs-half TV 36² per pair": " / ".join(
          _fmt(t) for t in ref["half_vs_half_tv_per_pair"]["36x36"]),
      "mean energy at 300 K (kJ/mol)": f"{_fmt(ref['energy_kj_mol']['mean'], 1)} ± "
                                       f"{ref['energy_kj_mol']['stderr']:.1f}",
      "cis / wrong-handed frames": f"{ref['cis_peptide_fraction']:g} / "
                                   f"{ref['wrong_chirality_fraction']:g}",
  }
  for i, basins in enumerate(ref.get("basin_populations_per_residue", [])):
    cells[f"basins, pair {i} (± over walkers)"] = ", ".join(
        f"{name} {_fmt(basins[key]['mean'])} ± {_fmt(basins[key]['stderr'])}"
        for key, name in BASINS)
  return cells


def table(paths: list[str]) -> str:
  cols = []
  for path in paths:
    if not os.path.isfile(path):
      raise SystemExit(f"pieces_table: no summary {path}")
    with open(path) as f:
      cols.append((os.path.splitext(os.path.basename(path))[0], column(json.load(f))))
  rows = list(dict.fromkeys(k for _, c in cols for k in c))
  lines = ["| | " + " | ".join(f"`{name}`" for name, _ in cols) + " |",
           "|---|" + "---|" * len(cols)]
  lines += ["| " + row + " | " + " | ".join(c.get(row, "–") for _, c in cols) + " |"
            for row in rows]
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("summaries", nargs="+", help="the pieces' JSON summaries")
  print(table(ap.parse_args(argv).summaries))
  return 0


if __name__ == "__main__":
  sys.exit(main())
