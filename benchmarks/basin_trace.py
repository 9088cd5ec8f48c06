"""Where a molecular CMT run loses its sparse basins: the per-residue φ ≥ 0 share of each step's
weights (``phi_pos_weighted`` in ``steps.jsonl``), run beside run, read at fixed points of the
path (its progress αβ, the exponent of p̃ in q_i ∝ q_0^{1−β} p̃^{αβ}) and at the last step,
as a Markdown table and a plot.

  .venv/bin/python benchmarks/basin_trace.py benchmarks/results/ala4_l16_plan85 \
      runs/ala4_l16_anchor1 --out benchmarks/results/basin_trace_ala4

Each folder needs ``steps.jsonl`` (a run folder or its copy under ``benchmarks/results``).
The figures are the shares under the step's own weights (the distribution the fit was asked
for); ``fit ESS`` is the ESS of the weights the fit used (an anchored run's, ``cmt.anchor``),
``step ESS`` that of the relative step's.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

PROGRESS = (0.3, 0.5, 0.7, 0.9, 0.99)


def load(folder: str) -> list[dict]:
  path = os.path.join(folder, "steps.jsonl")
  if not os.path.isfile(path):
    raise SystemExit(f"{folder}: no steps.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def at_progress(records: list[dict], progress: float):
  """The first record whose path progress αβ reaches ``progress`` (None if it never did)."""
  for r in records:
    if r.get("beta", 0) * r.get("alpha", 0) >= progress:
      return r
  return None


def _shares(r) -> str:
  if r is None:
    return "–"
  return " / ".join(f"{v:.4f}" for v in r["phi_pos_weighted"]) + f" (step {r['step']})"


def table(runs: dict[str, list[dict]]) -> str:
  lines = ["| run | " + " | ".join(f"αβ ≥ {a}" for a in PROGRESS) + " | last step |",
           "|---|" + "---|" * (len(PROGRESS) + 1)]
  for name, recs in runs.items():
    cells = [_shares(at_progress(recs, a)) for a in PROGRESS] + [_shares(recs[-1])]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "| run | median step ESS (steps before αβ = 0.999) | median fit ESS (same steps) |"
            " median realised ESS (same) |", "|---|---|---|---|"]
  for name, recs in runs.items():
    anneal = [r for r in recs if r.get("alpha", 1) * r.get("beta", 1) < 0.999]
    med = lambda k: (float(np.median([r[k] for r in anneal if r.get(k) is not None]))  # noqa: E731
                     if any(r.get(k) is not None for r in anneal) else float("nan"))
    lines.append(f"| {name} | {med('step_ess'):.3f} | {med('fit_ess'):.3f} | "
                 f"{med('realised_ess'):.3g} |")
  return "\n".join(lines)


def plot(runs: dict[str, list[dict]], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
  for i, (name, recs) in enumerate(runs.items()):
    steps = np.array([r["step"] for r in recs])
    shares = np.array([r["phi_pos_weighted"] for r in recs])
    c = f"C{i}"
    axes[0].semilogy(steps, shares.min(1), c=c, label=f"{name} (smallest residue)")
    axes[0].semilogy(steps, shares.max(1), c=c, ls=":", lw=0.8)
    alpha = np.array([r["alpha"] * r["beta"] for r in recs])
    axes[1].semilogy(alpha, shares.min(1), c=c, label=name)
  axes[0].set_xlabel("step")
  axes[0].set_ylabel("φ ≥ 0 share under the step's weights")
  axes[0].set_title("φ ≥ 0 per step (solid: smallest residue, dotted: largest)")
  axes[1].set_xlabel("path progress αβ")
  axes[1].set_title("smallest residue's φ ≥ 0 share against the path")
  for ax in axes:
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("folders", nargs="+")
  ap.add_argument("--out", default="", help="write OUT.md and OUT.png as well")
  args = ap.parse_args(argv)
  runs = {os.path.basename(os.path.normpath(f)): load(f) for f in args.folders}
  text = table(runs)
  print(text)
  if args.out:
    with open(args.out + ".md", "w") as f:
      f.write(text + "\n")
    plot(runs, args.out + ".png")


if __name__ == "__main__":
  main()
