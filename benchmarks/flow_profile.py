"""Where a flow's time goes, next to the floor of its dense matmuls (measured in the same run).

Profiles the flow a run builds for ``--target`` (the alanine-dipeptide internal-coordinate
flow by default) on this machine:

  * sampling: ``sample_and_log_prob`` of ``--n-sample`` samples in one batch and in blocks of
    ``--blocks`` rows (how runs draw on a CPU, ``distributed.block``), and its parts:
    base draw, per coupling layer the conditioner MLP (features + Dense layers), the spline's
    knots and its evaluation, the gathers/scatters, and the map to Cartesian positions;
  * the fit step: value and gradient of −mean log q on a batch of ``--batch`` samples plus the
    Adam update, and its parts: the map to internal coordinates, the inverse couplings;
  * the floor: the same dense matmuls alone (every weight matrix of the flow, same shapes and
    dtype), forward for sampling (in one batch, and block by block for the blocked sampler),
    forward + both backward products for the fit step.

Each figure is the median of repeats after compilation (wall and CPU seconds). Writes
benchmarks/results/flow_profile_<target>.json and .md.

  .venv/bin/python benchmarks/flow_profile.py [--target aldp] [--n-sample 100000] [--batch 512]
      [--blocks 512,1024,2048,4096]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmtjax.flows import flow_for_target
from cmtjax.flows.flow import in_blocks, resolve_block
from cmtjax.io.config import build_config, parse_override
from cmtjax.io.presets import preset_for
from cmtjax.targets import make_target

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def timed(fn, *args, repeats: int = 5) -> dict:
  """Median wall and CPU seconds of ``fn(*args)`` after one compiling call."""
  jax.block_until_ready(fn(*args))
  wall, cpu = [], []
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return {"wall": float(np.median(wall)), "cpu": float(np.median(cpu))}


def dense_shapes(params) -> list[tuple[int, int]]:
  """(n_in, n_out) of every Dense kernel of the flow's parameters."""
  return [tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
          if "kernel" in jax.tree_util.keystr(path)]


def matmul_floor(shapes, n: int, backward: bool, key) -> callable:
  """A jitted function doing the flow's matmuls alone for a batch of n (optionally with the
  two backward products of each), and its FLOP count."""
  ws = [jax.random.normal(k, s, jnp.float32) for k, s in
        zip(jax.random.split(key, len(shapes)), shapes)]
  xs = [jax.random.normal(k, (n, s[0]), jnp.float32) for k, s in
        zip(jax.random.split(jax.random.fold_in(key, 1), len(shapes)), shapes)]

  @jax.jit
  def run(xs, ws):
    out = []
    for x, w in zip(xs, ws):
      y = x @ w
      out.append(jnp.sum(y))
      if backward:  # dX = dY W^T, dW = X^T dY (dY taken as Y)
        out.append(jnp.sum(y @ w.T) + jnp.sum(x.T @ y))
    return sum(out)

  flops = sum(2 * n * a * b for a, b in shapes) * (3 if backward else 1)
  return (lambda: run(xs, ws)), flops


def profiled_flow(target_name: str, overrides=()):
  """``(config, target, flow, params)``: the flow a run builds for ``target_name`` (its own
  one-batch computation), with parameters off the identity (zero last layers would make the
  spline branch trivial)."""
  cfg = build_config([preset_for(target_name), {"target": target_name}, *overrides])
  target = make_target(target_name)
  flow = flow_for_target(cfg.flow, target)
  params = flow.init(jax.random.PRNGKey(0))
  params = jax.tree_util.tree_map(
      lambda a: a + 0.02 * jax.random.normal(jax.random.PRNGKey(1), a.shape), params)
  return cfg, target, flow, params


def make_fit_step(flow, opt, xb):
  """One jitted fit step: value and gradient of −mean log q on ``xb``, then the update."""
  @jax.jit
  def fit_step(p, s):
    loss, g = jax.value_and_grad(lambda q: -jnp.mean(flow.log_prob(q, xb)))(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss
  return fit_step


@contextlib.contextmanager
def knot_table_spline(on: bool):
  """Within: the flows' splines evaluated from the knot table (plain autodiff) instead of
  the fast path; JAX's trace caches are cleared on entry and exit (the flows' methods are
  jitted)."""
  from cmtjax.flows import splines
  fast = splines.RationalQuadraticSpline._run
  if on:
    splines.RationalQuadraticSpline._run = splines.RationalQuadraticSpline._run_from_knot_table
  jax.clear_caches()
  try:
    yield
  finally:
    splines.RationalQuadraticSpline._run = fast
    jax.clear_caches()


def profile(target_name: str, n_sample: int, batch: int, overrides=(),
            blocks=(512, 1024, 2048, 4096)) -> dict:
  cfg, target, flow, params = profiled_flow(target_name, overrides)
  key = jax.random.PRNGKey(0)
  out = {"target": target_name, "n_sample": n_sample, "batch": batch,
         "devices": str(jax.devices()), "flow": cfg.flow}

  sample = jax.jit(lambda p, k: flow.sample_and_log_prob(p, k, n_sample))
  out["sample_and_log_q"] = timed(sample, params, key)
  out["auto_block"] = resolve_block("auto")
  if out["auto_block"] and out["auto_block"] not in blocks:
    blocks = tuple(blocks) + (out["auto_block"],)
  out["sample_in_blocks"] = {}
  for b in blocks:
    blocked = in_blocks(flow, b)
    out["sample_in_blocks"][str(b)] = timed(
        jax.jit(lambda p, k, f=blocked: f.sample_and_log_prob(p, k, n_sample)), params, key)
  x, _ = sample(params, key)
  xb = x[:batch]
  opt = optax.adam(1e-4)
  opt_state = opt.init(params)

  out["fit_step"] = timed(make_fit_step(flow, opt, xb), params, opt_state, repeats=20)
  out["log_q_batch"] = timed(jax.jit(flow.log_prob), params, xb, repeats=20)
  if cfg.flow.get("coupling", "spline") == "spline":
    # The same three with the knot-table spline (the evaluation before the fast path),
    # interleaved with the fast path so that both see the same machine.
    out["knot_table"] = {k: [] for k in ("sample_and_log_q", "fit_step", "log_q_batch")}
    out["fast_again"] = {k: [] for k in out["knot_table"]}
    for _ in range(2):
      for use_table, into in ((True, out["knot_table"]), (False, out["fast_again"])):
        with knot_table_spline(use_table):
          into["sample_and_log_q"].append(timed(
              jax.jit(lambda p, k: flow.sample_and_log_prob(p, k, n_sample)), params, key,
              repeats=3))
          fit = make_fit_step(flow, opt, xb)
          into["fit_step"].append(timed(fit, params, opt_state, repeats=20))
          into["log_q_batch"].append(timed(jax.jit(flow.log_prob), params, xb, repeats=20))
    for d in (out["knot_table"], out["fast_again"]):
      for k, runs in d.items():
        d[k] = {m: float(np.median([r[m] for r in runs])) for m in ("wall", "cpu")}

  parts = {}
  if target.molecule is not None:
    from cmtjax.flows.internal_coordinates import make_internal_coordinates
    from cmtjax.flows.molecular import internal_couplings
    from cmtjax.flows.config import FlowConfig
    fc = FlowConfig(dim=target.dim, **cfg.flow)
    ic = make_internal_coordinates(target.molecule.zmatrix, bond_width=fc.bond_width,
                                   angle_width=fc.angle_width, offset_width=fc.offset_width)
    layers, _, _ = internal_couplings(fc, ic)
    y = jnp.clip(jax.random.uniform(key, (n_sample, ic.dim), minval=-0.9, maxval=0.9), -1, 1)
    parts["to_cartesian"] = timed(jax.jit(ic.to_cartesian), y)
    parts["to_internal (fit batch)"] = timed(jax.jit(ic.to_internal), xb, repeats=20)
  else:
    from cmtjax.flows.couplings import cartesian_couplings
    from cmtjax.flows.config import FlowConfig
    layers = cartesian_couplings(FlowConfig(dim=target.dim, **cfg.flow))
    y = jax.random.normal(key, (n_sample, target.dim))
  layer, p0 = layers[0], params["coupling_0"]
  feats = jax.jit(lambda yy: layer.features(yy[:, layer.cond_idx]))(y)
  nl = len(layers)
  parts[f"conditioner MLPs (x{nl})"] = {
      k: nl * v for k, v in timed(jax.jit(lambda f: layer.net.apply({"params": p0}, f)),
                                  feats).items()}
  theta = jax.jit(lambda f: layer.net.apply({"params": p0}, f))(feats)
  theta = theta.reshape(n_sample, len(layer.trans_idx), layer.n_params)
  from cmtjax.flows.splines import RationalQuadraticSpline, spline_forward, spline_knots
  pad = lambda t: jnp.concatenate([t[..., :2 * fc_bins(layer)], jnp.pad(  # noqa: E731
      t[..., 2 * fc_bins(layer):], [(0, 0), (0, 0), (1, 1)])], -1)
  box = 1.0 if target.molecule is not None else float(cfg.flow.get("box", 4.0))
  knots_fn = jax.jit(lambda t: spline_knots(pad(t), box))
  parts[f"spline knot table (x{nl}, reference path)"] = {
      k: nl * v for k, v in timed(knots_fn, theta).items()}
  knots = knots_fn(theta)
  yt = y[:, layer.trans_idx]
  parts[f"spline evaluation from the table (x{nl}, reference path)"] = {
      k: nl * v for k, v in timed(jax.jit(lambda a, kn: spline_forward(a, kn, box)), yt,
                                  knots).items()}
  parts[f"spline, fast path (x{nl}, what the flow runs)"] = {
      k: nl * v for k, v in timed(jax.jit(lambda a, t: RationalQuadraticSpline(
          pad(t), box).forward_and_log_det(a)), yt, theta).items()}
  parts[f"whole coupling layer (x{nl})"] = {
      k: nl * v for k, v in timed(jax.jit(lambda yy: layer.forward(p0, yy)), y).items()}
  out["sampling_parts"] = parts

  shapes = dense_shapes(params)
  fwd, flops_f = matmul_floor(shapes, n_sample, False, key)
  fb, flops_b = matmul_floor(shapes, batch, True, key)
  out["n_weight_matrices"] = len(shapes)
  out["n_weights"] = int(sum(a * b for a, b in shapes))
  out["floor_sample"] = timed(fwd) | {"gflop": flops_f / 1e9}
  if out["auto_block"]:  # the same matmuls block by block (cache-resident)
    b = out["auto_block"]
    fwd_b, _ = matmul_floor(shapes, b, False, key)
    per_block = timed(fwd_b, repeats=20)
    out["floor_sample_blocked"] = {k: v * n_sample / b for k, v in per_block.items()} | {
        "gflop": flops_f / 1e9}
    out["ratio_sample_blocked"] = (out["sample_in_blocks"][str(b)]["wall"]
                                   / out["floor_sample_blocked"]["wall"])
  out["floor_fit"] = timed(fb, repeats=20) | {"gflop": flops_b / 1e9}
  out["ratio_sample"] = out["sample_and_log_q"]["wall"] / out["floor_sample"]["wall"]
  out["ratio_fit"] = out["fit_step"]["wall"] / out["floor_fit"]["wall"]
  return out


def fc_bins(layer) -> int:
  """K of a spline layer from its parameter count 3K − 1."""
  return (layer.n_params + 1) // 3


def markdown(r: dict) -> str:
  ms = lambda t: f"{1e3 * t['wall']:.1f} ms ({1e3 * t['cpu']:.0f} CPU-ms)"  # noqa: E731
  lines = [f"# Flow profile: {r['target']} ({r['devices']})", "",
           f"Flow: `{json.dumps(r['flow'])}`; {r['n_weight_matrices']} weight matrices, "
           f"{r['n_weights']:,} weights.", "",
           "| what | time | floor (matmuls alone) | ratio |", "|---|---|---|---|",
           f"| sample + log q of {r['n_sample']:,} | {ms(r['sample_and_log_q'])} | "
           f"{ms(r['floor_sample'])}, {r['floor_sample']['gflop']:.1f} GFLOP | "
           f"{r['ratio_sample']:.2f} |",
           f"| fit step at batch {r['batch']} (value, gradient, Adam) | {ms(r['fit_step'])} | "
           f"{ms(r['floor_fit'])} (forward + backward) | {r['ratio_fit']:.2f} |",
           f"| log q at batch {r['batch']} | {ms(r['log_q_batch'])} | | |"]
  if r.get("ratio_sample_blocked") is not None:
    b = r["auto_block"]
    lines.append(f"| sample + log q of {r['n_sample']:,} in blocks of {b} (block = \"auto\") "
                 f"| {ms(r['sample_in_blocks'][str(b)])} | {ms(r['floor_sample_blocked'])} "
                 f"(block by block) | {r['ratio_sample_blocked']:.2f} |")
  if r.get("knot_table"):
    t, f = r["knot_table"], r["fast_again"]
    lines += ["", "The fast spline against the knot-table spline (the evaluation before it), "
              "interleaved in this run (median of 2 rounds):", "",
              "| what | knot table | fast | speed-up | fast / floor |", "|---|---|---|---|---|"]
    for key, name, floor in (("sample_and_log_q", f"sample + log q of {r['n_sample']:,}",
                              r["floor_sample"]),
                             ("fit_step", f"fit step at batch {r['batch']}", r["floor_fit"]),
                             ("log_q_batch", f"log q at batch {r['batch']}", None)):
      ratio = f"{f[key]['wall'] / floor['wall']:.2f}" if floor else ""
      lines.append(f"| {name} | {ms(t[key])} | {ms(f[key])} | "
                   f"{t[key]['wall'] / f[key]['wall']:.2f}x | {ratio} |")
  lines += ["", f"Sampling {r['n_sample']:,} in blocks:", "", "| block | time |", "|---|---|"]
  lines += [f"| {b} | {ms(v)} |" for b, v in r["sample_in_blocks"].items()]
  lines += ["",
           f"Parts of sampling {r['n_sample']:,} (each timed alone):", "",
           "| part | time |", "|---|---|"]
  lines += [f"| {k} | {ms(v)} |" for k, v in r["sampling_parts"].items()]
  return "\n".join(lines) + "\n"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--target", default="aldp")
  p.add_argument("--n-sample", type=int, default=100_000)
  p.add_argument("--batch", type=int, default=512)
  p.add_argument("--set", action="append", default=[], help="config override, e.g. flow.n_bins=8")
  p.add_argument("--blocks", default="512,1024,2048,4096",
                 help="block sizes of the blocked sampler to time (comma-separated)")
  p.add_argument("--tag", default="", help="suffix of the result files")
  args = p.parse_args(argv)
  blocks = tuple(int(b) for b in args.blocks.split(",") if b)
  r = profile(args.target, args.n_sample, args.batch, [parse_override(s) for s in args.set],
              blocks)
  os.makedirs(RESULTS, exist_ok=True)
  base = os.path.join(RESULTS, f"flow_profile_{args.target}{args.tag}")
  with open(base + ".json", "w") as f:
    json.dump(r, f, indent=1)
  md = markdown(r)
  with open(base + ".md", "w") as f:
    f.write(md)
  print(md)


if __name__ == "__main__":
  main()
