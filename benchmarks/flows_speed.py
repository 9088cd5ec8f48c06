"""Speed of the cmtjax coupling flows on CPU (run by hand).

Measures one jitted ``value_and_grad`` of ``mean(log_prob)`` (the forward-KL
fitting step) and of ``mean(log_q)`` from ``sample_and_log_prob`` (the
reverse-KL step) on a minibatch, for several dims and both couplings, and the
compile time of the first. Prints a Markdown table; ``--out FILE`` also writes
the rows as JSON.

Usage: python benchmarks/flows_speed.py [--batch 1024] [--repeats 50] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp

from cmtjax.flows import FlowConfig, make_flow


def _time(fn, repeats: int) -> float:
  """Best wall time (s) of ``fn`` over ``repeats`` runs after two warm-ups."""
  jax.block_until_ready(fn())  # compile
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  # The minimum: the machine may be shared, and other load only adds time.
  return min(times)


def bench(config: FlowConfig, batch: int, repeats: int) -> dict:
  flow = make_flow(config)
  params = flow.init(jax.random.key(0))
  # Non-trivial parameters so the splines are not the identity.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(
      tree, [l + 0.1 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
  x, _ = flow.sample_and_log_prob(params, jax.random.key(2), batch)

  fwd_kl = jax.jit(jax.value_and_grad(lambda p, x: -jnp.mean(flow.log_prob(p, x))))
  t0 = time.perf_counter()
  fwd_kl.lower(params, x).compile()
  compile_s = time.perf_counter() - t0
  rev_kl = jax.jit(jax.value_and_grad(
      lambda p, k: jnp.mean(flow.sample_and_log_prob(p, k, batch)[1])))
  key = jax.random.key(3)
  return {
      "dim": config.dim, "coupling": config.coupling, "n_layers": config.n_layers,
      "n_bins": config.n_bins, "hidden": list(config.hidden), "batch": batch,
      "log_prob_value_and_grad_ms": 1e3 * _time(lambda: fwd_kl(params, x), repeats),
      "sample_value_and_grad_ms": 1e3 * _time(lambda: rev_kl(params, key), repeats),
      "log_prob_ms": 1e3 * _time(lambda: flow.log_prob(params, x), repeats),
      "log_prob_value_and_grad_compile_s": compile_s,
  }


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=50)
  parser.add_argument("--dims", type=int, nargs="+", default=[2, 10])
  parser.add_argument("--couplings", nargs="+", default=["spline", "affine"])
  parser.add_argument("--out", default=None, help="JSON file for the rows")
  args = parser.parse_args()
  rows = []
  for coupling in args.couplings:
    for dim in args.dims:
      cfg = FlowConfig(dim=dim, coupling=coupling, n_layers=8, n_bins=16,
                       hidden=(128, 128))
      rows.append(bench(cfg, args.batch, args.repeats))
  header = ("| coupling | dim | batch | log_prob (ms) | v&g mean log_prob (ms) "
            "| v&g mean sample log_q (ms) | compile v&g log_prob (s) |")
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"devices {jax.devices()}")
  print(header)
  print("|" + "---|" * 7)
  for r in rows:
    print(f"| {r['coupling']} | {r['dim']} | {r['batch']} | {r['log_prob_ms']:.2f} "
          f"| {r['log_prob_value_and_grad_ms']:.2f} | {r['sample_value_and_grad_ms']:.2f} "
          f"| {r['log_prob_value_and_grad_compile_s']:.1f} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"jax": jax.__version__, "backend": jax.default_backend(),
                 "cpu_count": os.cpu_count(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
