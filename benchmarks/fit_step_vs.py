"""The fit step with this tree's spline against the spline of an earlier revision, side by side.

Times one fit step (value and gradient of −mean log q on a batch, then the Adam update) of the
flow a run builds for ``--target``, in rounds that alternate between the spline module of this
working tree (``cmtjax/flows/splines.py``) and the same file at git revision ``--rev``, with
the flow's dense matmuls alone (forward + both backward products: the floor of
``benchmarks/flow_profile.py``) timed in the same rounds. Reports the medians, the speed-up,
each one's ratio to the floor and the largest difference between the two gradients (the two
must compute the same function). Every measurement runs in a fresh process (a worker of this
script), the two splines alternating round by round: swapping the spline inside one process
timed the revision's spline ~25 % slower than the same code in a process of its own. Writes
benchmarks/results/fit_step_vs_<target><tag>.json/.md.

  .venv/bin/python benchmarks/fit_step_vs.py --rev HEAD~1 [--target aldp] [--batch 512]
      [--rounds 5] [--set flow.n_layers=8]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
from flow_profile import (RESULTS, dense_shapes, make_fit_step, matmul_floor,  # noqa: E402
                          profiled_flow, timed)

from cmtjax.flows import splines  # noqa: E402
from cmtjax.io.config import parse_override  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spline_source(rev: str) -> str:
  """``cmtjax/flows/splines.py`` as it was at git revision ``rev``."""
  try:
    return subprocess.run(["git", "show", f"{rev}:cmtjax/flows/splines.py"], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout
  except subprocess.CalledProcessError as e:
    raise SystemExit(f"cannot read cmtjax/flows/splines.py at revision {rev!r}: "
                     f"{e.stderr.strip()}") from None


def load_spline(path: str):
  """The spline module in file ``path``, loaded under another name."""
  spec = importlib.util.spec_from_file_location("splines_under_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def worker(args) -> None:
  """One measurement in a fresh process: the fit step with the spline of ``args.worker``
  (a file, or ``tree``) and the matmul floor, ``args.repeats`` calls each after compiling;
  writes their timings and the fit step's gradient to ``args.out`` (.json, .npz)."""
  if args.worker != "tree":
    splines._spline = load_spline(args.worker)._spline
  cfg, _, flow, params = profiled_flow(args.target, [parse_override(s) for s in args.set])
  key = jax.random.PRNGKey(0)
  x, _ = jax.jit(lambda p_, k: flow.sample_and_log_prob(p_, k, args.batch))(params, key)
  opt = optax.adam(1e-4)
  floor, _ = matmul_floor(dense_shapes(params), args.batch, True, key)
  fit = timed(make_fit_step(flow, opt, x), params, opt.init(params), repeats=args.repeats)
  grad = jax.jit(jax.grad(lambda p_: -jnp.mean(flow.log_prob(p_, x))))(params)
  with open(args.out + ".json", "w") as f:
    json.dump({"fit": fit, "floor": timed(floor, repeats=args.repeats), "flow": cfg.flow,
               "devices": str(jax.devices())}, f)
  np.savez(args.out + ".npz", *[np.asarray(a) for a in jax.tree_util.tree_leaves(grad)])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rev", required=True, help="git revision whose spline to compare against")
  p.add_argument("--target", default="aldp")
  p.add_argument("--batch", type=int, default=512)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--set", action="append", default=[], help="config override")
  p.add_argument("--tag", default="")
  p.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  p.add_argument("--out", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    return worker(args)

  tmp = tempfile.mkdtemp()
  rev_file = os.path.join(tmp, "splines_rev.py")
  with open(rev_file, "w") as f:
    f.write(spline_source(args.rev))
  times = {"this tree": [], args.rev: [], "floor": []}
  grads = {}
  for r in range(args.rounds):
    for name, spline in (("this tree", "tree"), (args.rev, rev_file)):
      out = os.path.join(tmp, f"{r}_{'tree' if spline == 'tree' else 'rev'}")
      cmd = [sys.executable, os.path.abspath(__file__), "--rev", args.rev, "--worker", spline,
             "--out", out, "--target", args.target, "--batch", str(args.batch),
             "--repeats", str(args.repeats)] + [a for s in args.set for a in ("--set", s)]
      subprocess.run(cmd, check=True, cwd=ROOT)
      with open(out + ".json") as f:
        rec = json.load(f)
      times[name].append(rec["fit"])
      times["floor"].append(rec["floor"])
      with np.load(out + ".npz") as z:
        grads[name] = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
    print(f"round {r + 1}/{args.rounds}: " + ", ".join(
        f"{k} {1e3 * v[-1]['wall']:.1f} ms" for k, v in times.items()), flush=True)
  med = {k: {m: float(np.median([t[m] for t in v])) for m in ("wall", "cpu")}
         for k, v in times.items()}
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(grads["this tree"], grads[args.rev]))
  scale = max(float(np.max(np.abs(a))) for a in grads[args.rev])
  r = {"target": args.target, "flow": rec["flow"], "batch": args.batch, "rev": args.rev,
       "rounds": args.rounds, "devices": rec["devices"], "median": med,
       "all": times, "speed_up": med[args.rev]["wall"] / med["this tree"]["wall"],
       "max_abs_grad_difference": diff, "max_abs_grad": scale}
  ms = lambda t: f"{1e3 * t['wall']:.1f} ms ({1e3 * t['cpu']:.0f} CPU-ms)"  # noqa: E731
  md = "\n".join([
      f"# Fit step: this tree against {args.rev} ({args.target}, batch {args.batch})", "",
      f"Flow: `{json.dumps(r['flow'])}`; median of {args.rounds} alternating rounds, each "
      f"variant in a fresh process ({args.repeats} steps, the floor timed in the same "
      f"process), on {r['devices']}.", "",
      "| spline | fit step | / floor |", "|---|---|---|",
      f"| {args.rev} | {ms(med[args.rev])} | {med[args.rev]['wall'] / med['floor']['wall']:.2f} |",
      f"| this tree | {ms(med['this tree'])} | "
      f"{med['this tree']['wall'] / med['floor']['wall']:.2f} |",
      f"| floor (the dense matmuls, forward + backward) | {ms(med['floor'])} | 1 |", "",
      f"Speed-up {r['speed_up']:.2f}x; largest gradient difference {diff:.1e} "
      f"(largest gradient entry {scale:.1e})."]) + "\n"
  os.makedirs(RESULTS, exist_ok=True)
  base = os.path.join(RESULTS, f"fit_step_vs_{args.target}{args.tag}")
  with open(base + ".json", "w") as f:
    json.dump(r, f, indent=1)
  with open(base + ".md", "w") as f:
    f.write(md)
  print(md)


if __name__ == "__main__":
  main()
