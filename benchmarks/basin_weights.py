"""How a molecular flow's φ > 0 samples weigh against the rest, per backbone residue.

For each run folder, from its saved samples (``samples.npz``: positions, energies, log w): the
share of samples with φ ≥ 0 (plain and reweighted), the median log importance weight and the
median energy in and out of that basin; then the same basin's share and median energies in the
reference frames. A basin whose samples weigh far less than the rest is one the flow samples
badly (wrong conditional geometry), and the importance weights of the next fit shrink it.
First, per run, the spread of all its log-weights (robust std and percentiles).

  .venv/bin/python benchmarks/basin_weights.py --target ala4 \\
      --reference data/reference/ala4_10ns.npz runs/ala4_lr3e4_b14 [more runs]
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from cmtjax.metrics import reverse_ess
from cmtjax.targets import make_target
from cmtjax.targets.molecules.topology import dihedral_angles


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="*", help="run folders with samples.npz")
  p.add_argument("--target", default="ala4")
  p.add_argument("--reference", default="", help="reference frames (npz with positions, energies)")
  args = p.parse_args(argv)
  phi_idx = np.asarray(make_target(args.target).molecule.phi_idx)
  for run in args.runs:
    d = np.load(f"{run}/samples.npz")
    phi = np.asarray(dihedral_angles(jnp.asarray(d["positions"]), phi_idx))
    log_w, energy = d["log_w"], d["energies"]
    ok = np.isfinite(log_w)
    print(f"{run}: {len(log_w)} samples")
    # The spread of the log-weights: a robust standard deviation (1.4826 x the median absolute
    # deviation, the std for normal log w, where ESS ~ exp(-std^2)), and the 1st / 99th
    # percentiles about the median. The bulk spread is the flow's overall precision; the
    # upper tail is what the reverse ESS feels most.
    lw = log_w[ok]
    centre = np.median(lw)
    print(f"  log w: robust std {1.4826 * np.median(np.abs(lw - centre)):.2f} nats, 1st / 99th "
          f"percentile {np.percentile(lw, 1) - centre:+.2f} / "
          f"{np.percentile(lw, 99) - centre:+.2f} about the median; ESS of these samples "
          f"{float(reverse_ess(jnp.asarray(log_w))):.3f}")
    for r in range(phi.shape[1]):
      pos, neg = (phi[:, r] >= 0) & ok, (phi[:, r] < 0) & ok
      share_w = np.exp(logsumexp(log_w[pos]) - logsumexp(log_w[ok])) if pos.any() else 0.0
      med = lambda a, m: float(np.median(a[m])) if m.any() else float("nan")  # noqa: E731
      print(f"  residue {r + 1}: φ > 0 plain {pos.sum() / ok.sum():.4f}, reweighted "
            f"{share_w:.4f}; median log w {med(log_w, pos):.2f} (φ > 0) vs "
            f"{med(log_w, neg):.2f}; median energy {med(energy, pos):.1f} vs "
            f"{med(energy, neg):.1f} kJ/mol")
  if args.reference:
    d = np.load(args.reference)
    phi = np.asarray(dihedral_angles(jnp.asarray(d["positions"]), phi_idx))
    for r in range(phi.shape[1]):
      pos = phi[:, r] >= 0
      print(f"  reference residue {r + 1}: φ > 0 {pos.mean():.4f}; median energy "
            f"{np.median(d['energies'][pos]):.1f} vs {np.median(d['energies'][~pos]):.1f} kJ/mol")


if __name__ == "__main__":
  main()
