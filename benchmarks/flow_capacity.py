"""How well flows of different shapes can fit a molecule: held-out likelihood on MD frames.

A capacity probe, not a training method: each flow shape is fitted by maximum likelihood
(forward KL, Adam) to the frames of half the walkers of a reference set and scored by its
mean negative log-likelihood on the other half's frames (independent walkers, so the held-out
NLL measures generalisation, not memorisation). The held-out NLL is the cross-entropy
−E_p[log q]; between two shapes its difference is the difference of their KL(p ‖ q), the
quantity the importance-weighted fits of CMT minimise. Beside it: the flow's weights, its
cost (wall and CPU seconds per fit step on this machine, measured in the same run) and the
held-out NLL after each share of the steps, so that quality per unit of compute can be read
off. A shape that cannot reach a low held-out NLL from exact samples cannot reach a high
ESS from energy-based training either; the converse does not hold (the reverse ESS also
depends on the tails that MD frames do not show).

The fits overfit when the reference has few effective samples: on ala4's 10 ns set (48,000
frames but ~1,230 effective samples, experiments/molecules/REFERENCE.md) the preset flow's
held-out NLL passes its minimum within a few hundred steps and then rises while the training
loss keeps falling. The table therefore gives the best held-out NLL over the checks (and its
step) beside the last; when the best comes early, the row is bounded by the data, not by the
flow. ``--run`` adds rows for finished runs (e.g. CMT flows, which never saw the frames),
scored on the same held-out frames.

Shapes are config overrides of the run's ``flow`` section (``key=value`` separated by
spaces, one shape per ``--shape``); the target's preset flow is the first row.

  .venv/bin/python benchmarks/flow_capacity.py --target ala4 \
      --reference data/reference/ala4_10ns.npz --steps 2000 \
      --shape "n_layers=16" --shape "hidden=[256,256,256]" --run runs/ala4_refine_s0

Writes benchmarks/results/flow_capacity_<target><tag>.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmtjax.flows import flow_for_target
from cmtjax.io.config import build_config, parse_override
from cmtjax.io.presets import preset_for
from cmtjax.sampling.chunks import map_in_chunks
from cmtjax.targets import make_target
from cmtjax.targets.molecules.reference import load_target_reference
from cmtjax.train.fit import clipped_adam, optimizer_steps

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def split_by_walker(walker: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Indices of the frames of even and of odd walkers (train, held out)."""
  even = (walker % 2) == 0
  return np.flatnonzero(even), np.flatnonzero(~even)


def n_weights(params) -> int:
  """Number of weights of a flow's parameters."""
  return int(sum(np.prod(np.shape(a)) for a in jax.tree_util.tree_leaves(params)))


def mean_nll(log_prob, params, x: jnp.ndarray, chunk: int = 4096) -> tuple[float, int]:
  """Mean −log q over the frames with finite log q, and the number of frames without one."""
  vals = map_in_chunks(lambda xs: log_prob(params, xs), x, chunk)
  finite = np.isfinite(vals)
  return float(-np.mean(vals[finite])), int(np.sum(~finite))


def probe(target, flow_kwargs: dict, train: jnp.ndarray, test: jnp.ndarray, *, steps: int,
          batch: int, learning_rate: float, n_checks: int, seed: int) -> dict:
  flow = flow_for_target(flow_kwargs, target)
  key = jax.random.PRNGKey(seed)
  params = flow.init(key)
  optimizer = clipped_adam(learning_rate, 100.0)
  opt_state = optimizer.init(params)
  log_prob = jax.jit(flow.log_prob)
  chunk_steps = max(1, steps // n_checks)
  # The flow's support does not depend on its parameters (bounded coordinates have fixed
  # intervals): frames outside it (log q = -inf) are left out of the fit once, here.
  inside = np.isfinite(map_in_chunks(lambda xs: log_prob(params, xs), train, 4096))
  train = train[np.flatnonzero(inside)]

  def loss(p, k):
    idx = jax.random.randint(k, (batch,), 0, train.shape[0])
    return -jnp.mean(flow.log_prob(p, train[idx])), ()

  @jax.jit
  def fit_chunk(p, s, k):
    res = optimizer_steps(optimizer, loss, p, s, k, chunk_steps)
    return res.params, res.opt_state, jnp.mean(res.losses)

  trace, wall, cpu, compile_s = [], 0.0, 0.0, 0.0
  done = 0
  for i in range(n_checks):
    key, k = jax.random.split(key)
    t0, c0 = time.perf_counter(), time.process_time()
    params, opt_state, train_loss = jax.block_until_ready(fit_chunk(params, opt_state, k))
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    if i == 0:  # the first call compiles: time the steps from the second on
      compile_s = dt
    else:
      wall, cpu = wall + dt, cpu + dc
    done += chunk_steps
    nll, n_out = mean_nll(log_prob, params, test)
    trace.append({"steps": done, "train_loss": float(train_loss), "heldout_nll": nll,
                  "heldout_outside": n_out})
    print(f"  {done:6d} steps  train {float(train_loss):9.3f}  held-out {nll:9.3f}"
          f"  ({n_out} outside the support)", flush=True)
  timed_steps = max(1, done - chunk_steps)
  return {"flow": flow_kwargs, "n_weights": n_weights(params), "trace": trace,
          "train_outside": int(np.sum(~inside)),
          "heldout_nll": trace[-1]["heldout_nll"],
          "best_heldout_nll": min(t["heldout_nll"] for t in trace),
          "s_per_step": wall / timed_steps, "cpu_s_per_step": cpu / timed_steps,
          "first_chunk_s": compile_s}


def markdown(r: dict) -> str:
  lines = [f"# Flow capacity on {r['target']}: held-out NLL of maximum-likelihood fits",
           "",
           f"Reference `{r['reference']}`: {r['n_train']} frames of even walkers to fit, "
           f"{r['n_test']} frames of odd walkers held out. {r['steps']} Adam steps of batch "
           f"{r['batch']} at lr {r['learning_rate']}, seed {r['seed']}. Held-out NLL: mean "
           "−log q in nats (lower is better; differences between rows are differences of "
           "KL(p ‖ q)). Time per step: wall / CPU seconds on this machine, in one run.",
           "",
           "| flow (overrides of the preset) | weights | s / step (CPU) | held-out NLL, last | "
           "best held-out NLL (at step) | last train loss |",
           "|---|---|---|---|---|---|"]
  for row in r["rows"]:
    if not row["trace"]:  # a finished run, scored as it is
      lines.append(f"| {row['label']} (trained elsewhere) | {row['n_weights']:,} | – | "
                   f"{row['heldout_nll']:.3f} | – | – |")
      continue
    best = min(row["trace"], key=lambda t: t["heldout_nll"])
    lines.append(f"| `{row['label']}` | {row['n_weights']:,} | {row['s_per_step']:.3f} "
                 f"({row['cpu_s_per_step']:.3f}) | {row['heldout_nll']:.3f} | "
                 f"{best['heldout_nll']:.3f} (step {best['steps']}) | "
                 f"{row['trace'][-1]['train_loss']:.3f} |")
  lines += ["", f"Command: `{r['command']}`", ""]
  return "\n".join(lines)


def plot(r: dict, path: str) -> None:
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for n, row in enumerate(r["rows"]):
    if not row["trace"]:  # a finished run: a horizontal line at its held-out NLL
      for i, ax in enumerate(axes):
        ax.axhline(row["heldout_nll"], ls="--", lw=1, color=f"C{n}",
                   label=row["label"] if i == 0 else None)
      continue
    steps = [t["steps"] for t in row["trace"]]
    nll = [t["heldout_nll"] for t in row["trace"]]
    axes[0].plot(steps, nll, marker="o", ms=3, color=f"C{n}", label=row["label"])
    axes[1].plot([s * row["cpu_s_per_step"] for s in steps], nll, marker="o", ms=3,
                 color=f"C{n}")
  axes[0].set_xlabel("Adam steps")
  axes[1].set_xlabel("CPU seconds of fitting")
  for ax in axes:
    ax.set_ylabel("held-out NLL (nats)")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{r['target']}: maximum-likelihood fits on MD frames, held-out walkers")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(result: dict, stem: str) -> None:
  os.makedirs(RESULTS, exist_ok=True)
  with open(stem + ".json", "w") as f:
    json.dump(result, f, indent=1)
  with open(stem + ".md", "w") as f:
    f.write(markdown(result))
  plot(result, stem + ".png")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--target", default="aldp")
  ap.add_argument("--reference", default=None,
                  help="reference .npz (default: the molecule's cached or shipped set)")
  ap.add_argument("--shape", action="append", default=[],
                  help="flow overrides of one row, e.g. \"n_layers=16 hidden=[256,256]\"")
  ap.add_argument("--run", action="append", default=[],
                  help="a finished run folder of the same target, scored on the held-out frames")
  ap.add_argument("--steps", type=int, default=2000)
  ap.add_argument("--batch", type=int, default=512)
  ap.add_argument("--learning-rate", type=float, default=1e-3)
  ap.add_argument("--checks", type=int, default=8, help="held-out evaluations per row")
  ap.add_argument("--max-test", type=int, default=8000, help="held-out frames scored")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--tag", default="")
  args = ap.parse_args(argv)
  if args.checks < 2:
    ap.error("--checks must be at least 2 (the first share of the steps compiles and is not "
             "timed)")

  target = make_target(args.target)
  ref = load_target_reference(target, args.reference)
  walker = np.asarray(ref.walker)
  tr, te = split_by_walker(walker)
  if len(tr) == 0 or len(te) == 0:
    raise SystemExit(f"{ref.path}: needs frames of at least two walkers to hold some out")
  rng = np.random.RandomState(args.seed)
  te = rng.permutation(te)[:args.max_test]
  pos = np.asarray(ref.positions, np.float32)
  train, test = jnp.asarray(pos[tr]), jnp.asarray(pos[te])
  command = "flow_capacity.py " + " ".join(
      f'"{a}"' if " " in a or "[" in a else a for a in (argv if argv is not None
                                                         else sys.argv[1:]))
  stem = os.path.join(RESULTS, f"flow_capacity_{args.target}{args.tag}")
  rows = []
  from cmtjax.api import load_run  # noqa: PLC0415
  for run_dir in args.run:
    found = load_run(run_dir)
    if found.config.target != args.target:
      raise SystemExit(f"--run {run_dir}: trained on {found.config.target!r}, not {args.target!r}")
    nll, n_out = mean_nll(jax.jit(found.flow.log_prob), found.params, test)
    rows.append({"label": f"run {run_dir}", "flow": found.config.flow,
                 "n_weights": n_weights(found.params),
                 "trace": [], "heldout_nll": nll, "best_heldout_nll": nll,
                 "heldout_outside": n_out})
    print(f"run {run_dir}: held-out {nll:.3f} ({n_out} outside the support)", flush=True)
  for shape in [""] + list(args.shape):
    # Through the config builder, so that a wrong key or value is refused with its name.
    flow_kwargs = build_config([preset_for(args.target), {"target": args.target},
                                *[parse_override("flow." + item) for item in shape.split()]]
                               ).flow
    label = shape or "preset"
    print(f"{label}: {json.dumps(flow_kwargs)}", flush=True)
    row = probe(target, flow_kwargs, train, test, steps=args.steps, batch=args.batch,
                learning_rate=args.learning_rate, n_checks=args.checks, seed=args.seed)
    row["label"] = label
    rows.append(row)
    result = {"target": args.target, "reference": os.path.relpath(ref.path),
              "n_train": int(len(tr)), "n_test": int(len(te)), "steps": args.steps,
              "batch": args.batch, "learning_rate": args.learning_rate, "seed": args.seed,
              "devices": str(jax.devices()), "rows": rows, "command": command}
    write(result, stem)  # after every row: a long sweep stopped midway keeps its rows
  print(markdown(result))


if __name__ == "__main__":
  main()
