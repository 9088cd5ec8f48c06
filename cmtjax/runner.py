"""One run end to end: config -> target, flow, method -> the loop -> metrics, files, plots.

Files left in the output folder:
  config.json     the full RunConfig (``cmtjax train --config DIR/config.json`` repeats the run)
  steps.jsonl     one line per outer step (for CMT: step, lambda, eta, alpha, beta, kl,
                  entropy_drop, step_ess, target_evals, realised_kl, ... )
  evals.jsonl     in-training evaluations (reverse ESS etc. against target evaluations)
  metrics.json    final figures (see :func:`run`)
  params.msgpack  final flow parameters (flax serialisation)
  samples.npz     model samples with log q, log p̃, log importance weights (and energies in
                  kJ/mol for molecules): ``cmtjax.io.samples``
  samples.png, schedule.png (CMT) or training.png, ess.png
  checkpoints/    orbax checkpoints of the last few steps (``run(..., resume=True)`` or
                  ``cmtjax train --resume DIR`` continues the run from the newest good one)

On several devices (``distributed.devices``) or processes (``distributed.coordinator`` ...),
the training step is split over the devices along the sample axis; process 0 writes the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cmtjax._json import json_default
from cmtjax import __version__
from cmtjax.flows import flow_for_target
from cmtjax.flows.flow import in_blocks
from cmtjax.io import plots
from cmtjax.io.config import (RunConfig, added_later_sections, build_config, load_file,
                              save_config, to_dict)
from cmtjax.io.params import PARAMS_FILE, params_path, read_params, write_params
from cmtjax.methods import get_method, make_method
from cmtjax.metrics import evaluate, evaluate_particles, run_warnings
from cmtjax.targets import check_target, make_target
from cmtjax.targets.registry import OBJECT_PREFIX, target_kind
from cmtjax.train.checkpoint import branch, config_differences
from cmtjax.train import (CheckpointOptions, TargetNotFinite, check_time_plan, fingerprint,
                          initialize, is_primary, make_mesh, plan_steps, train)

# steps.jsonl uses "lambda" for λ (a Python keyword, hence "lam" in the info NamedTuples).
_RENAME = {"lam": "lambda"}
# Sections of a RunConfig that do not change what a run computes (left out of its fingerprint,
# so that a run may be resumed with other checkpoint or device settings).
_NOT_FINGERPRINTED = ("checkpoint", "distributed")
# Settings added after runs were checkpointed (io.config.ADDED_LATER) are left out of the
# fingerprint while they hold their default, so a checkpoint written before they existed
# still resumes.
CHECKPOINT_DIR = "checkpoints"
BRANCH_FILE = "branched_from.json"  # a branch's origin, kept for its later resumes


def fingerprinted_config(cfg: RunConfig) -> dict:
  """The part of ``cfg`` that decides what a run computes (checkpoint/distributed left out),
  as plain JSON types; a target read from a file (PDB, ``file.py:function``, or the source
  file of an importable ``package.module:function``) adds the file's SHA-256, so an edited
  file is not resumed as if it were the same target."""
  out = json.loads(json.dumps({k: v for k, v in to_dict(cfg).items()
                               if k not in _NOT_FINGERPRINTED}))
  path = _target_source_file(cfg.target)
  if path is not None:
    with open(path, "rb") as f:
      out["target_file_sha256"] = hashlib.sha256(f.read()).hexdigest()
  for section, leaf, default in added_later_sections(out):  # absent from configs written
    if leaf in section and section[leaf] == default:         # before they existed: same hash
      del section[leaf]
  if cfg.init_params is not None and os.path.isfile(params_path(cfg.init_params)):
    with open(params_path(cfg.init_params), "rb") as f:
      out["init_params_sha256"] = hashlib.sha256(f.read()).hexdigest()
  return out


def _target_source_file(spec: str) -> Optional[str]:
  """The file a target spec is read from (a PDB file, a ``.py`` file, or the source of an
  importable module), or None (a built-in target, or a module that cannot be found: building
  the target then reports it)."""
  from cmtjax.targets.registry import target_kind
  kind = target_kind(spec)
  if kind == "pdb":
    path = spec
  elif kind == "python":
    module = spec.rpartition(":")[0]
    if module.endswith(".py"):
      path = module
    else:
      try:
        found = importlib.util.find_spec(module)
      except (ImportError, ValueError):
        return None
      path = getattr(found, "origin", None) or ""
  else:
    return None
  return path if path.endswith((".pdb", ".py")) and os.path.isfile(path) else None


def run_fingerprint(cfg: RunConfig) -> str:
  """The hash of :func:`fingerprinted_config` stored in checkpoints."""
  return fingerprint(fingerprinted_config(cfg))


# Settings of ADDED_LATER that cmtjax versions before 2026-12-05 hashed at their default.
_ONCE_HASHED_AT_DEFAULT = (("cmt", "refine_min_ess"),)


def earlier_fingerprints(cfg: RunConfig) -> tuple[str, ...]:
  """Fingerprints that earlier cmtjax versions gave this configuration (their checkpoints
  resume): the hash with the settings of ``_ONCE_HASHED_AT_DEFAULT`` back in."""
  out = fingerprinted_config(cfg)
  full = to_dict(cfg)
  added = False
  for *parents, leaf in _ONCE_HASHED_AT_DEFAULT:
    src, dst = full, out
    for key in parents:
      src, dst = src.get(key) or {}, dst.setdefault(key, {})
    if leaf in src and leaf not in dst:
      dst[leaf] = src[leaf]
      added = True
  return (fingerprint(json.loads(json.dumps(out))),) if added else ()


def prepare_out_dir(out_dir: str) -> str:
  """Creates ``out_dir`` and checks it is writable (a clear OSError otherwise)."""
  try:
    os.makedirs(out_dir, exist_ok=True)
    # One probe per process: processes of a multi-host run check the same folder at once.
    probe = os.path.join(out_dir, f".write_test.{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OSError(f"output folder {out_dir!r} is not writable: {e.strerror or e}") from None
  return out_dir



def build_target(cfg: RunConfig):
  """The target of ``cfg`` (``cfg.target`` with ``cfg.target_kwargs``). A float64 molecule
  (``target_kwargs.precision = "float64"``) turns on JAX's x64 mode, for the rest of the
  process, once the target has been built."""
  target = make_target(cfg.target, **cfg.target_kwargs)
  if target.info.get("precision") == "float64" and not jax.config.jax_enable_x64:
    jax.config.update("jax_enable_x64", True)
  return target


class RunOutcome(NamedTuple):
  """What :func:`run_outcome` returns: the metrics and the trained model."""
  metrics: dict
  params: Any
  flow: Any
  target: Any


def run(cfg: RunConfig, out_dir: Optional[str], *, target=None, flow=None,
        progress: bool = True, resume: bool = False,
        branch_from: Optional[tuple[str, Optional[int]]] = None) -> dict[str, Any]:
  """Trains a flow on a target with ``cfg.method`` and evaluates it; returns the metrics
  (:func:`run_outcome` returns the trained parameters too)."""
  return run_outcome(cfg, out_dir, target=target, flow=flow, progress=progress,
                     resume=resume, branch_from=branch_from).metrics


def run_outcome(cfg: RunConfig, out_dir: Optional[str], *, target=None, flow=None,
                progress: bool = True, resume: bool = False,
                branch_from: Optional[tuple[str, Optional[int]]] = None) -> RunOutcome:
  """Trains a flow on a target with ``cfg.method`` and evaluates it.

  Args:
    cfg: the validated run configuration.
    out_dir: folder for the outputs (None: write nothing, return the metrics only).
    target: a ``Target`` object to train on instead of building ``cfg.target`` (a Python
      energy of the user's own); ``cfg.target`` is then only its label.
    flow: a ``Flow`` to train instead of building one from ``cfg.flow``.
    progress: show a progress bar.
    resume: continue the run whose checkpoints are in ``out_dir/checkpoints`` (its
      ``steps.jsonl`` and ``evals.jsonl`` are rewritten from the checkpoint, then continued).
    branch_from: ``(run folder, steps or None)``: start from that run's checkpoint after
      this many steps (None: its newest) and go on with ``cfg``, which may differ from the
      run's own config in anything that keeps the state's layout (e.g. ``cmt.*`` settings or
      the budget): an experiment from the middle of a run without repeating its first steps
      (:func:`cmtjax.train.checkpoint.branch`). Its step records up to there are kept;
      ``metrics.json`` records ``branched_from``.

  Returns:
    A :class:`RunOutcome`. Its metrics are the dict written to ``metrics.json``: ``target``,
    ``method``, ``seed``,
    ``reverse_ess``, ``reverse_ess_clipped``, ``log_z``, ``target_evals``, ``grad_steps``,
    ``n_steps`` (taken), the figures of :func:`cmtjax.metrics.evaluate` (``log_z_error``,
    ``log_z_se``, ``modes_covered``, ``n_modes``, ``mode_tv``, ``eubo``, ``forward_ess`` ...
    where the target allows them), the method's own figures (its registered ``summary``:
    e.g. CMT's ``target_reached_at_step``), ``warnings``
    (:func:`cmtjax.metrics.run_warnings`: missing modes, a log Z error beyond its statistical
    error, a path that did not reach the target, a run ended by its time limit; empty if
    none), with a time limit (``checkpoint.max_training_minutes``) ``stopped_at_time_limit``
    and the budget ``max_target_evals`` (planned to the limit: also ``planned_target_evals``,
    the budget the run planned for), and ``timing``
    (``training_seconds``, ``compile_seconds``, ``eval_seconds``, ``total_seconds`` ...).
    Every key outside ``timing`` depends only on the configuration, the seed and the
    machine's arithmetic (except in a run planned to a time limit, whose budget and so its
    figures depend on the clock); ``timing`` holds all wall-clock figures.

  Raises:
    ValueError: a target or flow that fails :func:`cmtjax.targets.check_target`, or a target
      whose log density is non-finite on the whole first buffer
      (:class:`cmtjax.train.TargetNotFinite`).
  """
  t_start = time.perf_counter()
  usage_start = process_usage(reset_peak=True)
  dist = cfg.distributed
  # A multi-process run initialises jax.distributed before any JAX call (the checks included).
  initialize(dist.coordinator or None, dist.num_processes or None,
             dist.process_id if dist.process_id >= 0 else None)
  if target is None:
    target = build_target(cfg)
  elif target_kind(cfg.target) != "object":  # the saved config must not name another target
    cfg = dataclasses.replace(cfg, target=OBJECT_PREFIX + getattr(target, "name", "target"))
  check_target(target, flow_dim=None if flow is None else flow.dim)
  mesh = make_mesh("all" if jax.process_count() > 1 else dist.devices)
  flow = in_blocks(flow_for_target(cfg.flow, target) if flow is None else flow, dist.block)
  spec = get_method(cfg.method)
  method_cfg = cfg.method_config
  n_steps = plan_steps(method_cfg.evals_per_step, cfg.max_target_evals, cfg.max_steps)
  method = make_method(cfg.method, method_cfg, flow, target, n_steps,
                       max_target_evals=cfg.max_target_evals)
  if cfg.checkpoint.plan_to_time_limit:  # before the output folder is touched
    check_time_plan(method, 60.0 * cfg.checkpoint.max_training_minutes)
  primary = is_primary()
  if (resume or branch_from is not None) and out_dir is None:
    raise ValueError("resume and branch_from need the run's output folder")
  if resume and branch_from is not None:
    raise ValueError("resume or branch_from, not both")
  ckpt_opts = None
  if out_dir is not None:
    prepare_out_dir(out_dir)
    ckpt_dir = os.path.join(out_dir, CHECKPOINT_DIR)
    if primary:  # a resume rewrites it too: its checkpoint/distributed settings may change
      save_config(cfg, os.path.join(out_dir, "config.json"))
      if not resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # a fresh run replaces the folder's outputs
    if jax.process_count() > 1:  # nobody opens the checkpoint folder before it is cleared
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("cmtjax: output folder ready")
    if cfg.checkpoint.enabled or resume or branch_from is not None:
      ckpt_opts = CheckpointOptions(directory=ckpt_dir, every=cfg.checkpoint.every,
                                    keep=cfg.checkpoint.keep, fingerprint=run_fingerprint(cfg),
                                    config=fingerprinted_config(cfg),
                                    also_accepted=earlier_fingerprints(cfg))
  branched = None
  branch_note = None if out_dir is None else os.path.join(out_dir, BRANCH_FILE)
  if resume and os.path.isfile(branch_note):  # a branch resumed: it stays a branch
    with open(branch_note) as f:
      branched = json.load(f)
  elif branch_note is not None and primary and os.path.isfile(branch_note):
    os.remove(branch_note)  # a fresh run (or a new branch) in this folder
  if branch_from is not None:  # into the emptied checkpoint folder, then resumed from there
    src_run, n_from = branch_from
    src_cfg = os.path.join(src_run, "config.json")
    changed = (config_differences(fingerprinted_config(build_config([load_file(src_cfg)])),
                                  fingerprinted_config(cfg), limit=50)
               if os.path.isfile(src_cfg) else "")
    branched = {"run": os.path.abspath(src_run), "changed": changed}
    branched["steps"] = branch(os.path.join(src_run, CHECKPOINT_DIR), n_from, ckpt_opts)
    if primary:
      with open(branch_note, "w") as f:
        json.dump(branched, f, indent=1)
    resume = True

  k_init, k_train, k_eval = run_keys(cfg.seed)
  params = flow.init(k_init)
  if cfg.init_params is not None:
    params = read_params(cfg.init_params, params, what="the flow of this run's config")
  sample_fn = jax.jit(flow.sample_and_log_prob, static_argnums=(2,))

  def eval_during(k, params):
    params = jax.device_get(params)  # evaluate on this process's default device
    figures = evaluate(target, lambda kk, nn: sample_fn(params, kk, nn), k,
                       cfg.eval.n_samples_during, n_repeats=1, chunk=cfg.eval.chunk)
    return {k_: v for k_, v in figures.items() if not isinstance(v, list)}

  files = {}
  if out_dir is not None and primary:
    files = {name: open(os.path.join(out_dir, f"{name}.jsonl"), "w")
             for name in ("steps", "evals")}

  def writer(name):
    def write(record):
      if name in files:
        rec = {_RENAME.get(k, k): v for k, v in record.items()}
        files[name].write(json.dumps(rec, default=json_default) + "\n")
        files[name].flush()
    return write

  try:
    # A particle method's flow is not trained: evaluating it during training says nothing.
    in_training = cfg.eval.every and method.particles is None
    result = train(method, k_train, params, eval_fn=eval_during if in_training else None,
                   eval_every=cfg.eval.every, on_record=writer("steps"),
                   on_eval=writer("evals"), progress=progress and primary,
                   desc=f"{cfg.method} on {cfg.target}", checkpoint=ckpt_opts, resume=resume,
                   mesh=mesh, max_stalled_steps=cfg.checkpoint.max_stalled_steps,
                   max_training_seconds=(None if cfg.checkpoint.max_training_minutes is None
                                         else 60.0 * cfg.checkpoint.max_training_minutes),
                   plan_to_time_limit=cfg.checkpoint.plan_to_time_limit)
  except TargetNotFinite as e:
    raise TargetNotFinite(f"target {target.name!r}: {e}") from None
  finally:
    for f in files.values():
      f.close()
  params = jax.device_get(result.state.params)

  metrics: dict[str, Any] = {
      "target": cfg.target, "method": cfg.method, "seed": cfg.seed,
      "target_evals": result.target_evals, "grad_steps": result.grad_steps,
      "n_steps": len(result.records), "cmtjax_version": __version__,
  }
  if spec.summary is not None and result.records:
    metrics.update(spec.summary(result.records, method_cfg, target))
  metrics["n_devices"] = 1 if mesh is None else int(mesh.size)
  metrics["n_processes"] = jax.process_count()
  metrics["resumed_from"] = result.resumed_from
  if branched is not None:
    metrics["branched_from"] = branched
  if cfg.checkpoint.max_training_minutes is not None:
    metrics["max_training_minutes"] = cfg.checkpoint.max_training_minutes
    metrics["stopped_at_time_limit"] = result.stopped_at_time_limit
    metrics["max_target_evals"] = cfg.max_target_evals
  if result.planned_target_evals is not None:
    metrics["planned_target_evals"] = result.planned_target_evals
  metrics["timing"] = {"training_seconds": result.wall_seconds,
                       "compile_seconds": result.compile_seconds}
  last = result.records[-1] if result.records else {}
  metrics["final_beta"] = last.get("beta")
  if "alpha" in last:
    metrics["final_alpha"] = last["alpha"]
  # Every process evaluates (the same numbers); only process 0 writes files.
  if method.particles is not None:  # a particle method (SMC): its particles are the result
    evaluate_particle_run(cfg, target, method.particles(result.state),
                          out_dir if primary else None, metrics, molecular=primary)
  else:
    evaluate_trained(cfg, target, flow, params, out_dir if primary else None, metrics, k_eval,
                     molecular=primary)
  metrics["timing"]["total_seconds"] = time.perf_counter() - t_start
  metrics["timing"].update(process_usage(since=usage_start))
  if out_dir is not None and primary:
    write_metrics(out_dir, metrics)
    write_params(os.path.join(out_dir, PARAMS_FILE), params)
    _write_training_plots(cfg, spec, out_dir, result)
  return RunOutcome(metrics, params, flow, target)


def process_usage(since: dict | None = None, reset_peak: bool = False) -> dict[str, float]:
  """CPU seconds (user + system, every thread) and peak resident memory in GB of this process.

  Args:
    since: an earlier result of this function: the CPU seconds are then those spent since
      (one run's, in a process that runs several, e.g. ``benchmarks/compare.py``).
    reset_peak: start a new peak (Linux: ``/proc/self/clear_refs``), so that the peak read
      later is this run's; where that is not possible the peak stays the process's own.

  One sitting's figures: a resumed run's earlier sittings are not in them.
  """
  import resource  # noqa: PLC0415 - POSIX only; the figures are left out elsewhere
  import sys  # noqa: PLC0415
  if reset_peak:
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set size (VmHWM)
    except OSError:
      pass
  usage = resource.getrusage(resource.RUSAGE_SELF)
  cpu = usage.ru_utime + usage.ru_stime
  peak_bytes = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # macOS: bytes
  try:  # the peak since the last reset (ru_maxrss is never reset)
    with open("/proc/self/status") as f:
      peak_bytes = next(int(line.split()[1]) * 1024 for line in f
                        if line.startswith("VmHWM:"))
  except (OSError, StopIteration, ValueError, IndexError):
    pass
  if since is not None:
    cpu -= since.get("process_cpu_seconds", 0.0)
  return {"process_cpu_seconds": cpu, "process_peak_rss_gb": peak_bytes / 1024 ** 3}


# The keys of metrics.json that training sets (the method's summary aside); the rest come from
# the evaluation, which `cmtjax evaluate` recomputes.
TRAINING_KEYS = ("target", "method", "seed", "target_evals", "grad_steps", "n_steps",
                 "cmtjax_version", "n_devices", "n_processes", "resumed_from", "final_beta",
                 "final_alpha", "max_training_minutes", "stopped_at_time_limit",
                 "max_target_evals", "planned_target_evals")


def read_records(out_dir: str) -> list[dict]:
  """The step records of a run folder's steps.jsonl (``lambda`` read back as ``lam``)."""
  path = os.path.join(out_dir, "steps.jsonl")
  if not os.path.isfile(path):
    return []
  back = {v: k for k, v in _RENAME.items()}
  with open(path) as f:
    return [{back.get(k, k): v for k, v in json.loads(line).items()} for line in f if line.strip()]


def run_keys(seed: int):
  """(init, train, eval) keys of a run with this seed."""
  return tuple(jax.random.split(jax.random.PRNGKey(seed), 3))


def write_metrics(out_dir: str, metrics: dict) -> None:
  with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2, default=json_default)


def evaluate_trained(cfg: RunConfig, target, flow, params, out_dir: Optional[str],
                     metrics: dict, k_eval=None, *, reference_path: Optional[str] = None,
                     molecular: bool = True) -> dict:
  """The evaluation of trained parameters: final ESS and evidence figures, the molecular
  report (molecules; skipped with ``molecular=False``), warnings, and with ``out_dir`` the
  files ``samples.npz`` and ``samples.png``; updates and returns ``metrics`` (its ``timing``
  gains ``eval_seconds``)."""
  if k_eval is None:
    k_eval = run_keys(cfg.seed)[2]
  sample_fn = jax.jit(flow.sample_and_log_prob, static_argnums=(2,))
  log_prob_fn = jax.jit(flow.log_prob)
  timing = metrics.setdefault("timing", {})
  t_eval = time.perf_counter()
  final = evaluate(target, lambda kk, nn: sample_fn(params, kk, nn), k_eval,
                   cfg.eval.n_samples, log_prob_fn=lambda x: log_prob_fn(params, x),
                   n_repeats=cfg.eval.n_repeats, chunk=cfg.eval.chunk)
  timing["eval_seconds"] = time.perf_counter() - t_eval
  metrics.update(final)
  reference_path = reference_path or cfg.eval.reference or None
  if target.molecule is not None and molecular:
    from cmtjax.io.molecular_report import molecular_report
    t_mol = time.perf_counter()
    metrics.update(molecular_report(
        target, lambda kk, nn: sample_fn(params, kk, nn), lambda x: log_prob_fn(params, x),
        jax.random.fold_in(k_eval, 1), cfg.eval.n_samples, out_dir,
        reference_path=reference_path, chunk=min(cfg.eval.chunk, 8192),
        title=f"{cfg.method} on {target.name}",
        # a method that trained on reference frames names those it left out
        held_out=getattr(cfg.method_config, "held_out_reference", None)))
    timing["molecular_eval_seconds"] = time.perf_counter() - t_mol
  metrics["warnings"] = run_warnings(metrics, metrics.get("final_beta"),
                                     metrics.get("final_alpha"))
  if out_dir is not None:
    if cfg.eval.n_saved_samples:
      from cmtjax.io.samples import draw_samples, save_samples
      save_samples(os.path.join(out_dir, "samples.npz"),
                   draw_samples(target, sample_fn, params, jax.random.fold_in(k_eval, 2),
                                cfg.eval.n_saved_samples, chunk=min(cfg.eval.chunk, 8192)))
    _write_sample_plot(cfg, target, out_dir, params, sample_fn)
  return metrics


def evaluate_particle_run(cfg: RunConfig, target, particles, out_dir: Optional[str],
                          metrics: dict, *, reference_path: Optional[str] = None,
                          molecular: bool = True) -> dict:
  """The evaluation of a particle method's result ``(x, log_w, log_z)``: the particles' ESS,
  log Z and mode figures (:func:`cmtjax.metrics.evaluate_particles`), the molecular report
  of the weighted particles (no forward figures: there is no model density), warnings, and
  with ``out_dir`` the files ``samples.npz`` (every particle) and ``samples.png``; updates
  and returns ``metrics``."""
  x, log_w, log_z = (np.asarray(a) for a in jax.device_get(particles))
  timing = metrics.setdefault("timing", {})
  t_eval = time.perf_counter()
  metrics.update(evaluate_particles(target, x, log_w, float(log_z), chunk=cfg.eval.chunk))
  timing["eval_seconds"] = time.perf_counter() - t_eval
  reference_path = reference_path or cfg.eval.reference or None
  if target.molecule is not None and molecular:
    from cmtjax.io.molecular_report import molecular_report
    t_mol = time.perf_counter()
    metrics.update(molecular_report(
        target, None, None, None, len(x), out_dir, samples=(x, log_w),
        reference_path=reference_path, chunk=min(cfg.eval.chunk, 8192),
        title=f"{cfg.method} on {target.name}"))
    timing["molecular_eval_seconds"] = time.perf_counter() - t_mol
  metrics["warnings"] = run_warnings(metrics, metrics.get("final_beta"),
                                     metrics.get("final_alpha"))
  if out_dir is not None:
    from cmtjax.io.samples import particle_samples, save_samples
    save_samples(os.path.join(out_dir, "samples.npz"),
                 particle_samples(target, x, log_w, chunk=min(cfg.eval.chunk, 8192)))
    rng = np.random.default_rng(cfg.seed)
    w = np.exp(log_w - np.max(log_w))
    idx = rng.choice(len(x), size=min(5000, len(x)), p=w / w.sum())
    _write_sample_plot(cfg, target, out_dir, None,
                       lambda _p, _k, _n: (jnp.asarray(x[idx]), None))
  return metrics


def _write_sample_plot(cfg: RunConfig, target, out_dir: str, params, sample_fn) -> None:
  x, _ = sample_fn(params, jax.random.PRNGKey(cfg.seed + 1), 5000)
  x = np.asarray(x)
  bounds = target.plot_bounds or (float(np.percentile(x[:, :2], 0.5)),
                                  float(np.percentile(x[:, :2], 99.5)))
  log_prob_2d = None
  if target.dim == 2:
    log_prob_2d = lambda g: target.log_prob(jnp.asarray(g, jnp.float32))  # noqa: E731
  ref = None
  if target.sample is not None:
    ref = np.asarray(target.sample(jax.random.PRNGKey(cfg.seed + 2), 5000))
  centres = None if target.mode_centres is None else np.asarray(target.mode_centres)
  plots.plot_samples(os.path.join(out_dir, "samples.png"), log_prob_2d, x, bounds,
                     title=f"{cfg.method} on {target.name} (first two coordinates)",
                     ref_x=ref, mode_centres=centres)


def _write_training_plots(cfg: RunConfig, spec, out_dir: str, result) -> None:
  records = [{_RENAME.get(k, k): v for k, v in r.items()} for r in result.records]
  if spec.plot is not None:
    spec.plot(out_dir, records, cfg.method_config, f"{cfg.method} on {cfg.target}")
  else:
    keys = [k for k in ("loss", "batch_ess") if records and k in records[0]]
    plots.plot_training_curve(os.path.join(out_dir, "training.png"), records, keys,
                              title=f"{cfg.method} on {cfg.target}")
  if result.evals:
    plots.plot_ess_vs_evals(os.path.join(out_dir, "ess.png"), {cfg.method: [result.evals]},
                            title=f"{cfg.target}: reverse ESS during training")
