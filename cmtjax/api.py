"""The Python API: a method with keyword hyperparameters, trained on any target to a budget of
target evaluations, evaluated, and written to the same output folder as a ``cmtjax train`` run.

  import jax.numpy as jnp
  import cmtjax

  def log_prob(x):                                   # [batch, 6] -> [batch]
    return -0.5 * jnp.sum(x**2, axis=-1)

  target = cmtjax.Target(name="gauss6", dim=6, log_prob=log_prob)
  run = cmtjax.fit(target, cmtjax.CMT(eps_tr=0.3, n_samples=10_000), budget=3e5,
                   out="runs/gauss6")                # metrics.json, samples.npz, plots, ...
  print(run.metrics["reverse_ess"])
  samples = run.sample(1000, seed=1)                 # positions, log_q, log_p, log_w

Methods are built like optax transformations: ``cmtjax.CMT(**hyperparameters)``,
``cmtjax.ReverseKL(...)``, ``cmtjax.FAB(...)``, ``cmtjax.TABG(...)``,
``cmtjax.ForwardKL(...)`` or ``cmtjax.method(name, ...)`` for any registered one (their
hyperparameters are the fields of the method's config class, e.g. ``CMTConfig``); a misspelt
hyperparameter is an error at once. (``cmtjax.cmt`` is the package of the CMT dual and
solver, hence the capitals.) ``target`` is a :class:`cmtjax.Target` or a target spec
(a registered name, a PDB file, ``module:function``); ``flow`` is a dict of
:class:`cmtjax.FlowConfig` fields or a built :class:`cmtjax.Flow`. :func:`load_run` reopens a
run folder to draw more samples or evaluate it again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Optional, Union

import jax

from cmtjax.io.config import ConfigError, RunConfig, build_config, load_file
from cmtjax.methods.registry import get_method, method_names


@dataclasses.dataclass(frozen=True)
class MethodChoice:
  """A training method and the hyperparameters given for it (the rest: the target's preset,
  then the method's defaults)."""

  name: str
  hyperparameters: dict

  @property
  def config(self):
    """The method's full config dataclass (defaults filled in)."""
    return build_config([{"method": self.name, self.name: dict(self.hyperparameters)}]
                        ).method_config


def method(name: str, **hyperparameters: Any) -> MethodChoice:
  """A registered method with keyword hyperparameters (checked now: an unknown name or a
  wrong type is a :class:`~cmtjax.io.config.ConfigError` naming it)."""
  if name not in method_names():
    raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(method_names())}")
  choice = MethodChoice(name, dict(hyperparameters))
  choice.config  # pylint: disable=pointless-statement  (validates)
  return choice


def CMT(**hyperparameters: Any) -> MethodChoice:
  """Constrained Mass Transport (:class:`cmtjax.methods.CMTConfig` fields)."""
  return method("cmt", **hyperparameters)


def ReverseKL(**hyperparameters: Any) -> MethodChoice:
  """Reverse-KL training (:class:`cmtjax.methods.ReverseKLConfig` fields)."""
  return method("reverse_kl", **hyperparameters)


def FAB(**hyperparameters: Any) -> MethodChoice:
  """Flow annealed importance sampling bootstrap."""
  return method("fab", **hyperparameters)


def TABG(**hyperparameters: Any) -> MethodChoice:
  """Temperature-annealed Boltzmann generator."""
  return method("tabg", **hyperparameters)


def ForwardKL(**hyperparameters: Any) -> MethodChoice:
  """Forward KL on exact target samples (an oracle, for targets that have them)."""
  return method("forward_kl", **hyperparameters)


def SMC(**hyperparameters: Any) -> MethodChoice:
  """Adaptive tempered SMC (blackjax; :class:`cmtjax.methods.smc.SMCConfig` fields): the
  non-ML baseline. Its result is a weighted particle set, not a flow."""
  return method("smc", **hyperparameters)


@dataclasses.dataclass
class Run:
  """A trained model and its figures.

  Attributes:
    config: the run's :class:`~cmtjax.io.config.RunConfig`.
    target: the :class:`cmtjax.Target`.
    flow: the :class:`cmtjax.Flow`.
    params: the trained flow parameters.
    metrics: the figures of ``metrics.json``.
    out_dir: the run folder (None if nothing was written).
  """

  config: RunConfig
  target: Any
  flow: Any
  params: Any
  metrics: dict
  out_dir: Optional[str] = None

  def _needs_flow(self, what: str) -> None:
    from cmtjax.methods import get_method
    if get_method(self.config.method).particle_method:
      where = os.path.join(self.out_dir, "samples.npz") if self.out_dir else "its samples"
      raise ValueError(f"method {self.config.method!r} is a particle sampler: it trained no "
                       f"flow to {what}; its weighted particles are in {where} "
                       f"(cmtjax.io.samples.load_samples)")

  def sample(self, n: int, seed: int = 0, *, chunk: int = 8192) -> dict:
    """``n`` model samples with log q, log p̃, log importance weights (and energies in kJ/mol
    for molecules): the arrays of :mod:`cmtjax.io.samples`."""
    self._needs_flow("sample")
    from cmtjax.io.samples import draw_samples
    sample_fn = jax.jit(self.flow.sample_and_log_prob, static_argnums=(2,))
    return draw_samples(self.target, sample_fn, self.params, jax.random.PRNGKey(seed), int(n),
                        chunk=chunk)

  def save_samples(self, path: str, n: int, seed: int = 0) -> list[str]:
    """Writes ``n`` samples to ``path`` (.npz; molecules also ``<stem>.dcd`` + ``<stem>.pdb``);
    returns the files written."""
    from cmtjax.io.samples import save_samples
    if not path.endswith(".npz"):
      path += ".npz"
    samples = self.sample(n, seed)
    written = [save_samples(path, samples)]
    if self.target.molecule is not None:
      from cmtjax.io.trajectory import save_trajectory
      written += list(save_trajectory(path[:-len(".npz")], samples["positions"],
                                      self.target.molecule.pdb_path, max_frames=None))
    return written

  def evaluate(self, reference: Optional[str] = None, *, write: bool = True) -> dict:
    """Evaluates the trained flow again (e.g. against a new reference file for a molecule):
    the figures of the end of training, recomputed with the run's evaluation key; with
    ``write`` and a run folder, metrics.json, samples.npz and the plots are rewritten. A
    particle method's run (SMC) is evaluated again from the particles in its samples.npz."""
    from cmtjax.runner import (TRAINING_KEYS, evaluate_particle_run, evaluate_trained,
                               read_records, write_metrics)
    metrics = {k: self.metrics[k] for k in TRAINING_KEYS if k in self.metrics}
    spec = get_method(self.config.method)
    records = read_records(self.out_dir) if self.out_dir else []
    if spec.summary is not None and records:
      metrics.update(spec.summary(records, self.config.method_config, self.target))
    metrics["timing"] = {k: v for k, v in self.metrics.get("timing", {}).items()
                         if k in ("training_seconds", "compile_seconds")}
    metrics["timing"]["reevaluated_at"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    out_dir = self.out_dir if write else None
    if spec.particle_method:
      from cmtjax.io.samples import load_samples
      if self.out_dir is None or "log_z" not in self.metrics:
        raise ValueError(f"method {self.config.method!r} is a particle sampler: it is "
                         f"evaluated from its run folder's samples.npz and metrics.json")
      s = load_samples(os.path.join(self.out_dir, "samples.npz"))
      evaluate_particle_run(self.config, self.target,
                            (s["positions"], s["log_w"], self.metrics["log_z"]), out_dir,
                            metrics, reference_path=reference)
    else:
      evaluate_trained(self.config, self.target, self.flow, self.params, out_dir, metrics,
                       reference_path=reference)
    if reference:
      metrics["reference"] = os.path.abspath(reference)
    if out_dir is not None:
      write_metrics(out_dir, metrics)
    self.metrics = metrics
    return metrics


def fit(target, method: Optional[MethodChoice] = None, *, budget: Optional[float] = None,
        flow: Union[None, dict, Any] = None, seed: int = 0, out: Optional[str] = None,
        target_kwargs: Optional[dict] = None, max_steps: Optional[int] = None,
        eval: Optional[dict] = None, checkpoint: Optional[dict] = None,  # noqa: A002
        progress: bool = True, resume: bool = False) -> Run:
  """Trains a Boltzmann generator on ``target`` and evaluates it.

  Args:
    target: a :class:`cmtjax.Target`, or a target spec (registered name, PDB file,
      ``module:function``; its preset applies).
    method: e.g. ``cmtjax.CMT(eps_tr=0.3)`` (default: CMT with the preset's or default
      hyperparameters).
    budget: training budget in target evaluations (default: the preset's, else 2e6).
    flow: :class:`cmtjax.FlowConfig` fields as a dict (``dim`` comes from the target), or a
      built :class:`cmtjax.Flow` of the target's dimension.
    seed: PRNG seed.
    out: output folder (config.json, metrics.json, steps.jsonl, samples.npz, params.msgpack,
      plots, checkpoints), or None to write nothing.
    target_kwargs: keyword arguments of a target spec's factory.
    max_steps: optional cap on outer steps.
    eval: ``eval`` settings (e.g. ``{"n_samples": 20000}``).
    checkpoint: ``checkpoint`` settings.
    progress: show a progress bar.
    resume: continue the run in ``out`` from its checkpoint.

  Returns:
    The :class:`Run`.

  Raises:
    ConfigError / ValueError: naming the problem (a wrong hyperparameter, a flow of the wrong
      dimension, a ``log_prob`` that does not return ``[batch]`` floats, a target that is NaN
      on the whole first buffer, ...).
  """
  from cmtjax.io.presets import preset_for
  from cmtjax.runner import run_outcome
  from cmtjax.targets.base import Target
  from cmtjax.targets.registry import OBJECT_PREFIX, resolve_target_spec

  method = method if method is not None else MethodChoice("cmt", {})
  if not isinstance(method, MethodChoice):
    raise ValueError(f"method must be built with cmtjax.CMT(...), cmtjax.method(name, ...) "
                     f"etc., got {type(method).__name__}")
  target_obj = None
  if isinstance(target, Target):
    target_obj, spec, preset = target, OBJECT_PREFIX + target.name, {}
    if target_kwargs:
      raise ValueError("target_kwargs go with a target spec, not a Target object")
  elif isinstance(target, str):
    spec = resolve_target_spec(target)
    preset = preset_for(spec)
  else:
    raise ValueError(f"target must be a cmtjax.Target or a target spec string, got "
                     f"{type(target).__name__}")
  flow_obj = None
  layer: dict = {"target": spec, "method": method.name, "seed": int(seed),
                 method.name: dict(method.hyperparameters)}
  if isinstance(flow, dict):
    layer["flow"] = dict(flow)
  elif flow is not None:
    flow_obj = flow
  if target_kwargs:
    layer["target_kwargs"] = dict(target_kwargs)
  if budget is not None:
    if not float(budget).is_integer() or budget < 1:
      raise ConfigError(f"budget must be a whole number of target evaluations, got {budget}")
    layer["max_target_evals"] = int(budget)
  if max_steps is not None:
    layer["max_steps"] = int(max_steps)
  if eval:
    layer["eval"] = dict(eval)
    if layer["eval"].get("reference"):  # found again from any working directory
      layer["eval"]["reference"] = os.path.abspath(layer["eval"]["reference"])
  if checkpoint:
    layer["checkpoint"] = dict(checkpoint)
  cfg = build_config([preset, layer])
  outcome = run_outcome(cfg, out, target=target_obj, flow=flow_obj, progress=progress,
                        resume=resume)
  return Run(cfg, outcome.target, outcome.flow, outcome.params, outcome.metrics, out)


def load_run(run_dir: str, *, target=None, flow=None) -> Run:
  """Reopens a finished run folder (config.json, params.msgpack, metrics.json).

  Args:
    run_dir: the run folder.
    target: the :class:`cmtjax.Target`, for a run trained on a Target object (its config only
      names it); by default the config's target spec is built again.
    flow: the :class:`cmtjax.Flow`, for a run trained on a flow object.

  Raises:
    FileNotFoundError: not a finished run folder.
    ValueError: a target that cannot be rebuilt from the config, or parameters that do not fit
      the flow.
  """
  from cmtjax.flows import flow_for_target
  from cmtjax.io.params import read_params
  from cmtjax.runner import build_target
  from cmtjax.targets.base import check_target
  from cmtjax.targets.registry import target_kind

  for name in ("config.json", "params.msgpack"):
    if not os.path.isfile(os.path.join(run_dir, name)):
      raise FileNotFoundError(f"{run_dir!r} is not a finished run folder: no {name} there")
  cfg = build_config([load_file(os.path.join(run_dir, "config.json"))])
  if target is None:
    if target_kind(cfg.target) in ("object", "unknown"):
      raise ValueError(f"run {run_dir!r} was trained on a Target object ({cfg.target!r}), "
                       f"which its config cannot rebuild; use "
                       f"cmtjax.load_run({run_dir!r}, target=...) from Python")
    target = build_target(cfg)
  check_target(target, flow_dim=None if flow is None else flow.dim)
  if flow is None:
    flow = flow_for_target(cfg.flow, target)
  params = read_params(run_dir, flow.init(jax.random.PRNGKey(0)),
                       what=f"the flow of {run_dir}/config.json")
  metrics_path = os.path.join(run_dir, "metrics.json")
  metrics = {}
  if os.path.isfile(metrics_path):
    with open(metrics_path) as f:
      metrics = json.load(f)
  return Run(cfg, target, flow, params, metrics, run_dir)


__all__ = ["CMT", "FAB", "ForwardKL", "MethodChoice", "ReverseKL", "Run", "TABG", "fit",
           "load_run", "method"]
