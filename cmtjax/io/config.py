"""Typed run configuration: load, merge, override, validate, save.

A run is fully described by a :class:`RunConfig` (saved as ``config.json`` next to every
result, so ``cmtjax train --config DIR/config.json`` repeats it). Configs are built in layers:
the defaults of the dataclasses, then the target's preset (:mod:`cmtjax.io.presets`), then a
config file (JSON or TOML), then ``--set section.key=value`` overrides, then the CLI flags.
Every layer is validated: an unknown key, a wrong type or an impossible value is a
:class:`ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import types
import typing
import warnings
from typing import Any, Optional

from cmtjax.methods.registry import get_method, method_names

CONFIG_VERSION = 1


class ConfigError(ValueError):
  """A configuration that cannot be used; the message names the offending key."""


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """How a run is evaluated.

  Attributes:
    n_samples: model samples per ESS estimate.
    n_repeats: independent ESS estimates (the median is reported).
    every: evaluate every this many steps during training, for the ESS-vs-evaluations curve
      (0: only at the end). In-training evaluations use ``n_samples_during`` samples, one repeat.
    n_samples_during: samples per in-training evaluation.
    chunk: largest batch sampled at once.
    reference: molecular targets: file of reference samples for the molecular figures
      (empty: the cached or shipped reference set of the molecule, if there is one).
    n_saved_samples: model samples written to ``samples.npz`` with their log q, log p̃ and
      log importance weights (0: none).
  """

  n_samples: int = 100_000
  n_repeats: int = 5
  every: int = 10
  n_samples_during: int = 20_000
  chunk: int = 50_000
  reference: str = ""
  n_saved_samples: int = 10_000


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
  """Checkpoints of a run (in ``OUT/checkpoints``; ``cmtjax train --resume OUT`` continues).

  Attributes:
    enabled: write checkpoints.
    every: checkpoint after every this many outer steps (and after the last one).
    keep: number of newest checkpoints kept.
    max_stalled_steps: stop the run after this many consecutive steps without progress (all
      target evaluations non-finite, or all gradient steps skipped); 0 never stops.
    max_training_minutes: a limit on the time of the training steps (summed over the
      sittings of a resumed run; start-up, checkpoint writes and evaluations not counted;
      None: no limit). The run ends after the last step that its typical time per target
      evaluation lets finish within it, as if its budget were spent: final checkpoint,
      evaluation and outputs, and a warning. Resuming with a larger limit goes on. Like the
      rest of this section it is not part of the run's fingerprint, so it may be changed on
      resume (with ``plan_to_time_limit`` it also changes what the steps compute).
    plan_to_time_limit: plan the run to end within ``max_training_minutes`` instead of being
      cut there (``cmtjax train --plan-minutes M``): from the first steps' timing the budget
      becomes the target evaluations that fit (at most ``max_target_evals``), and CMT plans
      its annealing and learning-rate decay for it (with ``cmt.plan_budget``: the path
      reaches the target and the flow is refined within the time). ``metrics.json`` records
      the budget planned (``planned_target_evals``); such a run depends on the machine's
      speed, so it is repeated by its planned budget, not by its config. A resume plans
      afresh with ``--plan-minutes M``; with ``--minutes M`` the plan is off and the run goes
      on to ``max_target_evals``.
  """

  enabled: bool = True
  every: int = 1
  keep: int = 3
  max_stalled_steps: int = 5
  max_training_minutes: Optional[float] = None
  plan_to_time_limit: bool = False

  def __post_init__(self):
    if self.every < 1 or self.keep < 1 or self.max_stalled_steps < 0:
      raise ValueError("checkpoint.every and checkpoint.keep must be >= 1 and "
                       "checkpoint.max_stalled_steps >= 0")
    minutes = self.max_training_minutes
    if minutes is not None and (isinstance(minutes, bool) or not minutes > 0
                                or not math.isfinite(minutes)):
      raise ValueError(f"checkpoint.max_training_minutes must be a number of minutes > 0 or "
                       f"null, got {minutes!r}")
    if self.plan_to_time_limit and minutes is None:
      raise ValueError("checkpoint.plan_to_time_limit needs checkpoint.max_training_minutes "
                       "(cmtjax train --plan-minutes M sets both)")


def check_block(block) -> None:
  """Raises ValueError unless a flow block size ``block`` is ``"auto"`` or an integer >= 0
  (not a bool); shared by the config and :func:`cmtjax.flows.flow.resolve_block`."""
  if block == "auto":
    return
  if isinstance(block, bool) or not isinstance(block, int) or block < 0:
    raise ValueError(f"block must be 'auto' or an integer >= 0 (0: whole batches), got {block!r}")


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
  """Devices, processes and batch layout of a run (they change how fast a run computes, not
  what it computes).

  Attributes:
    devices: ``"all"`` (every device of every process; the sample axis is split over them)
      or a count n >= 1 (the first n devices; 1 is a plain single-device run).
    coordinator: ``host:port`` of process 0 for a multi-process run (or
      ``CMTJAX_COORDINATOR``); empty for a single process.
    num_processes: number of processes (or ``CMTJAX_NUM_PROCESSES``); 0: from the environment.
    process_id: this process's index (or ``CMTJAX_PROCESS_ID``); -1: from the environment.
    block: the flow draws and scores batches larger than this in blocks of this many rows
      (0, the default: whole batches; ``"auto"``: 1024 on a CPU, whole batches on GPU/TPU).
      On 2 CPU cores shared with another job, blocks of 1024 drew 1e5 aldp samples 1.4x
      faster; on 2 idle cores 1.03x (benchmarks/flow_profile.py). Samples for a given seed
      depend on it; their distribution does not.
  """

  devices: typing.Union[int, str] = 1
  coordinator: str = ""
  num_processes: int = 0
  process_id: int = -1
  block: typing.Union[int, str] = 0

  def __post_init__(self):
    check_block(self.block)  # the check cmtjax.flows.flow.resolve_block uses too
    if not (self.devices == "all" or (isinstance(self.devices, int) and self.devices >= 1)):
      raise ValueError(f"devices must be 'all' or an integer >= 1, got "
                       f"{self.devices!r}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that defines a run.

  Attributes:
    version: config schema version.
    target: target spec: a registered name (``cmtjax.targets.TARGET_NAMES``), a PDB file or a
      Python factory ``module:function`` (see ``cmtjax.targets.registry``).
    target_kwargs: keyword arguments of the target factory.
    method: a registered method (:func:`cmtjax.methods.method_names`: ``"cmt"``,
      ``"reverse_kl"``, ``"fab"``, ``"tabg"``, ``"forward_kl"``).
    seed: PRNG seed.
    max_target_evals: training budget in target evaluations.
    max_steps: optional cap on outer steps.
    flow: flow architecture: keyword arguments of :class:`cmtjax.flows.FlowConfig` except
      ``dim``, which comes from the target.
    init_params: a ``params.msgpack`` file, or the folder of an earlier run, whose flow
      parameters the run starts from instead of the flow's initialisation (the flow section
      must describe the same flow). CMT then anneals from that flow (q_0 is the loaded flow),
      which for a flow already close to the target makes the run a refinement.
    method_config: the chosen method's hyperparameters (its registered config class; None:
      its defaults). In files and dicts it is the section named after the method
      (``[cmt]``, ``[fab]`` ...); a saved config carries only that section.
    eval: evaluation settings.
    checkpoint: checkpoints and the stopping rule (not part of the run's fingerprint).
    distributed: devices and processes (not part of the run's fingerprint).
  """

  version: int = CONFIG_VERSION
  target: str = "gmm40"
  target_kwargs: dict = dataclasses.field(default_factory=dict)
  method: str = "cmt"
  seed: int = 0
  max_target_evals: int = 2_000_000
  max_steps: Optional[int] = None
  flow: dict = dataclasses.field(default_factory=dict)
  init_params: Optional[str] = None
  method_config: Any = None
  eval: EvalSettings = EvalSettings()
  checkpoint: CheckpointSettings = CheckpointSettings()
  distributed: DistributedSettings = DistributedSettings()

  def __post_init__(self):
    cls = get_method(self.method).config
    if self.method_config is None:
      object.__setattr__(self, "method_config", cls())
    elif not isinstance(self.method_config, cls):
      raise ValueError(f"method {self.method!r} takes a {cls.__name__}, got "
                       f"{type(self.method_config).__name__}")


def _type_name(tp) -> str:
  return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
  """Checks (and gently converts) ``value`` to the annotated type ``tp``."""
  origin = typing.get_origin(tp)
  args = typing.get_args(tp)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    errors = []
    for a in args:
      if a is type(None):
        continue
      try:
        return _coerce(value, a, where)
      except ConfigError as e:
        errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
  if dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return value
    if not isinstance(value, dict):
      raise ConfigError(f"{where}: expected a table of settings, got {value!r}")
    return _from_dict(tp, value, where)
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{where}: expected a list, got {value!r}")
    return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
  if tp is dict or origin is dict:
    if not isinstance(value, dict):
      raise ConfigError(f"{where}: expected a table, got {value!r}")
    return dict(value)
  if tp is bool:
    if isinstance(value, bool):
      return value
    raise ConfigError(f"{where}: expected true/false, got {value!r}")
  if tp is int:
    if isinstance(value, bool):
      raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise ConfigError(f"{where}: expected an integer, got {value!r}")
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)
  if tp is str:
    if not isinstance(value, str):
      raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value
  return value


# Keys that were renamed (old -> new): a config that uses the old name still loads, with a
# warning naming the new one.
RENAMED_KEYS = {"n_fit_steps": "n_grad_steps"}


def _from_dict(cls, data: dict, where: str = ""):
  fields = {f.name: f for f in dataclasses.fields(cls)}
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for key, value in data.items():
    name = f"{where}.{key}" if where else key
    if key not in fields and RENAMED_KEYS.get(key) in fields:
      new = RENAMED_KEYS[key]
      if new in data:
        raise ConfigError(f"config key {name!r} is the old name of "
                          f"{(where + '.' if where else '') + new!r}; give only one of them")
      warnings.warn(f"config key {name!r} is now called {new!r}; please rename it",
                    FutureWarning, stacklevel=2)
      key, name = new, f"{where}.{new}" if where else new
    if key not in fields:
      raise ConfigError(f"unknown config key {name!r}; valid keys"
                        f"{' of ' + where if where else ''}: {', '.join(fields)}")
    kwargs[key] = _coerce(value, hints[key], name)
  try:
    return cls(**kwargs)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"{where + ': ' if where else ''}{e}") from None


def to_dict(cfg) -> dict:
  """A JSON-serialisable dict of a (nested) config dataclass (a RunConfig's
  ``method_config`` under the method's name)."""
  out = {}
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    name = cfg.method if isinstance(cfg, RunConfig) and f.name == "method_config" else f.name
    if dataclasses.is_dataclass(v):
      v = to_dict(v)
    elif isinstance(v, tuple):
      v = list(v)
    out[name] = v
  return out


def _deep_merge(base: dict, update: dict) -> dict:
  out = dict(base)
  for k, v in update.items():
    if isinstance(v, dict) and isinstance(out.get(k), dict):
      out[k] = _deep_merge(out[k], v)
    else:
      out[k] = v
  return out


def load_file(path: str) -> dict:
  """Reads a JSON or TOML config file into a dict (validated later)."""
  if not os.path.isfile(path):
    raise ConfigError(f"config file not found: {path}")
  try:
    if path.endswith(".toml"):
      with open(path, "rb") as f:
        return tomllib.load(f)
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
    raise ConfigError(f"cannot parse config file {path}: {e}") from None


def parse_override(text: str) -> dict:
  """``"cmt.eps_tr=0.2"`` -> ``{"cmt": {"eps_tr": 0.2}}`` (value parsed as JSON, else string)."""
  if "=" not in text:
    raise ConfigError(f"override {text!r} must look like section.key=value")
  key, raw = text.split("=", 1)
  try:
    value = json.loads(raw)
  except json.JSONDecodeError:
    value = raw
  out: dict = {}
  node = out
  parts = key.strip().split(".")
  for p in parts[:-1]:
    node = node.setdefault(p, {})
  node[parts[-1]] = value
  return out


# Settings added after runs were saved and checkpointed, with the default they had when
# added (what a run saved before them computed with).
ADDED_LATER = {("init_params",): None, ("cmt", "plan_anneal_evals"): None,
               ("cmt", "refine_min_ess"): 0.0, ("cmt", "fit_weight_cap"): 0.0,
               ("cmt", "refine_skip_ess"): 0.0, ("forward_kl", "early_stopping"): False,
               ("forward_kl", "validation_frames"): 4096, ("cmt", "anchor"): 0.0,
               ("cmt", "anchor_min_ess_ratio"): 0.5,
               ("cmt", "fit_average"): 0.0}


def added_later_sections(layer: dict):
  """``(section, leaf, default)`` for each setting of ``ADDED_LATER`` whose section ``layer``
  (a config as a dict) has: ``section[leaf]`` is where that setting lives."""
  for path, default in ADDED_LATER.items():
    *parents, leaf = path
    section = layer
    for key in parents:
      section = section.get(key)
      if not isinstance(section, dict):
        break
    else:
      yield section, leaf, default


def is_saved_run_config(layer: dict) -> bool:
  """True for a run's own ``config.json`` (complete: it names the version and every section),
  not a partial config file written by hand."""
  return all(k in layer for k in ("version", "target", "method", "flow", "eval", "checkpoint"))


def with_settings_added_later(layer: dict) -> dict:
  """A saved run's config with the settings of ``ADDED_LATER`` it lacks (it was saved before
  they existed) at the default they had when added, so that repeating it under a target's
  preset repeats the run it describes rather than taking a newer preset value. Other layers
  are returned as they are."""
  if not is_saved_run_config(layer):
    return layer
  out = json.loads(json.dumps(layer))
  for section, leaf, default in added_later_sections(out):
    section.setdefault(leaf, default)
  return out


def build_config(layers: list[dict]) -> RunConfig:
  """Merges dict layers (later wins) over the defaults and validates the result."""
  merged: dict = {}
  for layer in layers:
    merged = _deep_merge(merged, layer)
  version = merged.get("version", CONFIG_VERSION)
  if version != CONFIG_VERSION:
    raise ConfigError(f"config version {version!r} is not supported by this cmtjax "
                      f"(expects {CONFIG_VERSION})")
  names = method_names()
  method = merged.get("method", RunConfig.method)
  if method not in names:
    raise ConfigError(f"unknown method {method!r}; known methods: {', '.join(names)}")
  valid = [f.name for f in dataclasses.fields(RunConfig) if f.name != "method_config"]
  for key in merged:
    if key not in valid and key not in names:
      raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid)} and a "
                        f"method section ({', '.join(names)})")
  # Every method section given is checked (a typo in [fab] is an error even when running
  # CMT); the chosen method's becomes method_config, the others are dropped.
  sections = {n: _coerce(merged.pop(n), get_method(n).config, n) for n in names if n in merged}
  merged["method_config"] = sections.get(method)
  cfg = _from_dict(RunConfig, merged)
  from cmtjax.flows.config import FlowConfig  # noqa: PLC0415 - jax only once a run is built
  flow_keys = [f.name for f in dataclasses.fields(FlowConfig) if f.name != "dim"]
  for key in cfg.flow:
    if key not in flow_keys:
      raise ConfigError(f"unknown config key 'flow.{key}'; valid keys of flow: "
                        f"{', '.join(flow_keys)}")
  try:
    FlowConfig(dim=2, **cfg.flow)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"flow: {e}") from None
  if cfg.max_target_evals < 1:
    raise ConfigError(f"max_target_evals must be >= 1, got {cfg.max_target_evals}")
  if cfg.max_steps is not None and cfg.max_steps < 1:
    raise ConfigError(f"max_steps must be >= 1 or null, got {cfg.max_steps}")
  return cfg


def save_config(cfg: RunConfig, path: str) -> None:
  with open(path, "w") as f:
    json.dump(to_dict(cfg), f, indent=2)
