"""Checkpoints of a training run (orbax), written atomically, and their restoration.

A checkpoint after ``n`` completed outer steps is the folder ``DIR/n/`` with two items:

  state   the loop's arrays (orbax PyTree format, no pickle): the :class:`TrainState`
          (params, optimiser state, method state: e.g. CMT's multipliers and path) and the
          run's PRNG key. The key of step i is ``fold_in(key, i)``, so with the key and the
          step index the run continues exactly where it stopped.
  meta    JSON: format version, the run's fingerprint (a hash of its configuration) and the
          configuration itself, cmtjax version, ``n`` and the loop's host counters (target
          evaluations, gradient steps, wall time, consecutive stalled steps), the signature
          of the state (path, shape and dtype of every leaf), and how many step records and
          evaluations the run had made.

The step records and evaluations themselves are appended to ``DIR/history.jsonl`` (one line
each, written before the checkpoint that counts them), so a checkpoint's size does not grow
with the run's length; on resume the first counted lines rebuild ``steps.jsonl`` and
``evals.jsonl`` without duplicates and the file is cut back to them.

orbax writes each checkpoint into a temporary folder and renames it once complete, so a run
killed while saving leaves the previous checkpoints intact; only the newest ``keep`` are kept.

On restore the newest checkpoint is tried first. A different fingerprint or state signature is
an :class:`IncompatibleCheckpointError` (resuming with another configuration is refused); an
unreadable checkpoint is set aside as ``DIR/n.corrupt`` with a warning and the previous one is
used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from typing import Any, NamedTuple, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from cmtjax._json import json_default
from cmtjax.train.state import TrainState

# 3: CMT's state holds the budget it plans for (BudgetPlan), for runs planned to a time limit.
FORMAT_VERSION = 3
HISTORY_FILE = "history.jsonl"


class CheckpointError(RuntimeError):
  """No usable checkpoint (none written, or all unreadable)."""


class IncompatibleCheckpointError(CheckpointError):
  """A checkpoint written by a different run configuration or state layout."""


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
  """Where and how often the loop checkpoints.

  Attributes:
    directory: checkpoint folder (created if missing).
    every: save after every this many outer steps (and after the last one).
    keep: number of newest checkpoints kept.
    fingerprint: identifies the run's configuration (see :func:`fingerprint`); a resume
      from a checkpoint with another fingerprint is refused.
    config: the configuration the fingerprint hashes (stored in each checkpoint, so that a
      refused resume names the keys that differ); None: not stored.
    also_accepted: fingerprints an earlier cmtjax gave the same configuration (a setting
      added since, at its default, was once part of the hash): their checkpoints resume.
  """

  directory: str
  every: int = 1
  keep: int = 3
  fingerprint: str = ""
  config: Optional[dict] = None
  also_accepted: tuple = ()

  def __post_init__(self):
    if self.every < 1 or self.keep < 1:
      raise ValueError(f"checkpoint every and keep must be >= 1, got {self.every}, {self.keep}")


class Restored(NamedTuple):
  """A restored checkpoint.

  Attributes:
    n_done: outer steps completed before the checkpoint.
    state: the :class:`TrainState`.
    key: the run's PRNG key.
    host: the loop's host counters (``target_evals``, ``grad_steps``, ``wall_seconds``,
      ``compile_seconds``, ``stalled``).
    records: step records so far.
    evals: evaluations so far.
    path: folder of the checkpoint.
  """

  n_done: int
  state: TrainState
  key: jax.Array
  host: dict
  records: list
  evals: list
  path: str


def fingerprint(config: Any) -> str:
  """A short hash of a JSON-serialisable description of a run (sorted keys)."""
  text = json.dumps(config, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def signature(tree: Any) -> list:
  """``[path, shape, dtype]`` of every leaf of ``tree`` (what a checkpoint must match)."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [[jax.tree_util.keystr(p), list(np.shape(v)), str(_dtype(v))] for p, v in leaves]


def _dtype(v) -> np.dtype:
  return np.dtype(v.dtype) if hasattr(v, "dtype") else np.asarray(v).dtype


class Checkpointer:
  """Saves and restores the loop's checkpoints in one folder (a thin orbax wrapper)."""

  def __init__(self, options: CheckpointOptions):
    self.options = options
    self.directory = os.path.abspath(options.directory)
    self._manager = self._open()
    self.last_path: Optional[str] = None
    self.history_path = os.path.join(self.directory, HISTORY_FILE)
    self._n_written = {"step": 0, "eval": 0}  # lines of each kind in history.jsonl

  def _open(self) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(max_to_keep=self.options.keep, create=True,
                                        enable_async_checkpointing=False)
    return ocp.CheckpointManager(self.directory, options=opts)

  def path_of(self, n_done: int) -> str:
    return os.path.join(self.directory, str(n_done))

  def steps(self) -> list[int]:
    """Completed checkpoints, newest first."""
    return sorted(self._manager.all_steps(), reverse=True)

  def save(self, n_done: int, state: TrainState, key: jax.Array, host: dict, records: list,
           evals: list) -> str:
    """Writes the checkpoint after ``n_done`` steps and returns its folder."""
    tree = {"state": state, "key": _host_key(key)}
    self._append_history(records, evals)
    meta = {"format": FORMAT_VERSION, "fingerprint": self.options.fingerprint,
            "config": self.options.config, "cmtjax_version": _version(),
            "n_done": int(n_done), "host": host, "signature": signature(tree),
            "n_records": len(records), "n_evals": len(evals)}
    meta = json.loads(json.dumps(meta, default=json_default))
    self._manager.save(int(n_done), args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()
    self.last_path = self.path_of(n_done)
    return self.last_path

  def restore(self, like_state: TrainState, like_key: jax.Array) -> Restored:
    """Restores the newest readable checkpoint.

    Args:
      like_state: a state of the right structure, shapes, dtypes and shardings (e.g. the
        method's freshly initialised state).
      like_key: a key of the right shape and dtype.

    Returns:
      The :class:`Restored` checkpoint.

    Raises:
      CheckpointError: no checkpoint, or none readable.
      IncompatibleCheckpointError: the newest readable checkpoint belongs to another run
        configuration or state layout.
    """
    steps = self.steps()
    if not steps:
      raise CheckpointError(f"no checkpoint to resume from in {self.directory}")
    like = {"state": like_state, "key": _host_key(like_key)}
    expected = signature(like)
    problems = []
    for n in steps:
      path = self.path_of(n)
      try:
        meta = self._manager.restore(n, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore())).meta
        if not isinstance(meta, dict) or "fingerprint" not in meta:
          raise ValueError("checkpoint metadata is missing or malformed")
      except Exception as e:  # noqa: BLE001 - any read failure means "unreadable"
        problems.append(self._set_aside(n, path, e))
        continue
      _check_compatible(meta, self.options, expected, path)
      try:
        tree = self._manager.restore(n, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(like))).state
      except Exception as e:  # noqa: BLE001
        problems.append(self._set_aside(n, path, e))
        continue
      self.last_path = path
      records, evals = self._restore_history(int(meta["n_records"]), int(meta["n_evals"]))
      return Restored(n_done=int(meta["n_done"]), state=tree["state"],
                      key=jax.numpy.asarray(tree["key"]), host=dict(meta["host"]),
                      records=records, evals=evals, path=path)
    raise CheckpointError(f"no readable checkpoint in {self.directory}: " + "; ".join(problems))

  def clear_history(self) -> None:
    """Starts history.jsonl afresh (a new run in this folder)."""
    if jax.process_index() == 0 and os.path.exists(self.history_path):
      os.remove(self.history_path)
    self._n_written = {"step": 0, "eval": 0}

  def _append_history(self, records: list, evals: list) -> None:
    """Appends the records and evaluations not yet in history.jsonl (process 0 only)."""
    new = [{"kind": "step", **r} for r in records[self._n_written["step"]:]]
    new += [{"kind": "eval", **e} for e in evals[self._n_written["eval"]:]]
    if new and jax.process_index() == 0:
      with open(self.history_path, "a") as f:
        for item in new:
          f.write(json.dumps(item, default=json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())
    self._n_written = {"step": len(records), "eval": len(evals)}

  def _restore_history(self, n_records: int, n_evals: int) -> tuple[list, list]:
    """The first ``n_records`` step records and ``n_evals`` evaluations of history.jsonl;
    the file is cut back to them (lines of steps after the checkpoint are dropped)."""
    got = {"step": [], "eval": []}
    want = {"step": n_records, "eval": n_evals}
    if os.path.isfile(self.history_path):
      with open(self.history_path) as f:
        for line in f:
          try:
            item = json.loads(line)
          except json.JSONDecodeError:
            break  # a line cut short by a kill: nothing after it was counted
          kind = item.pop("kind", None)
          if kind in got and len(got[kind]) < want[kind]:
            got[kind].append(item)
    if len(got["step"]) < n_records or len(got["eval"]) < n_evals:
      warnings.warn(f"{self.history_path} holds {len(got['step'])} of {n_records} step records "
                    f"and {len(got['eval'])} of {n_evals} evaluations; steps.jsonl and "
                    f"evals.jsonl continue without the missing ones", RuntimeWarning,
                    stacklevel=3)
    if jax.process_index() == 0:
      tmp = f"{self.history_path}.tmp"
      with open(tmp, "w") as f:
        for kind in ("step", "eval"):
          for item in got[kind]:
            f.write(json.dumps({"kind": kind, **item}, default=json_default) + "\n")
      os.replace(tmp, self.history_path)
    self._n_written = {"step": len(got["step"]), "eval": len(got["eval"])}
    return got["step"], got["eval"]

  def _set_aside(self, n: int, path: str, error: Exception) -> str:
    msg = f"checkpoint {path} is unreadable ({type(error).__name__}: {_short(error)})"
    aside = f"{path}.corrupt"
    if jax.process_index() == 0 and os.path.isdir(path):
      if os.path.exists(aside):
        aside = f"{aside}.{os.getpid()}"
      os.replace(path, aside)
    self._manager.reload()
    warnings.warn(f"{msg}; moved to {aside}, falling back to the previous checkpoint",
                  RuntimeWarning, stacklevel=3)
    return msg

  def close(self) -> None:
    self._manager.close()


def _host_key(key: jax.Array) -> np.ndarray:
  """The raw key data as a host array (the same in every process of a multi-process run)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    raise TypeError("pass a raw uint32 PRNG key (jax.random.PRNGKey), not a typed key")
  return np.asarray(key)


def _check_compatible(meta: dict, options: CheckpointOptions, expected: list,
                      path: str) -> None:
  if meta.get("format") != FORMAT_VERSION:
    raise IncompatibleCheckpointError(
        f"checkpoint {path} has format {meta.get('format')!r} (cmtjax "
        f"{meta.get('cmtjax_version', '?')}); this cmtjax ({_version()}) reads format "
        f"{FORMAT_VERSION}: start a new output folder, or resume with that cmtjax version")
  if meta.get("fingerprint") not in (options.fingerprint, *options.also_accepted):
    differing = config_differences(meta.get("config"), options.config)
    what = (f"these settings differ (checkpoint vs this run): {differing}" if differing else
            f"fingerprint {meta.get('fingerprint')!r}, this run {options.fingerprint!r}")
    raise IncompatibleCheckpointError(
        f"checkpoint {path} was written by a run with another configuration; {what}; resume "
        f"with the run's own config.json or start a new output folder")
  got = meta.get("signature")
  if got != expected:
    diff = next(((g, e) for g, e in zip(got or [], expected) if g != e), None)
    detail = (f"first difference: checkpoint {diff[0]} vs run {diff[1]}" if diff else
              f"{len(got or [])} arrays in the checkpoint vs {len(expected)} in the run")
    raise IncompatibleCheckpointError(
        f"checkpoint {path} does not match this run's state layout ({detail})")


def branch(src_dir: str, n_done: Optional[int], options: CheckpointOptions) -> int:
  """Starts a new run's checkpoint folder from a checkpoint of another run (a branch).

  Checkpoint ``n_done`` of ``src_dir`` (a checkpoint folder; None: its newest) and the step
  records it counts are copied into ``options.directory`` (which must hold no checkpoint),
  and the copy is marked as this run's: its fingerprint and configuration become
  ``options``'s. A resume from the new folder then
  continues the old run's state (parameters, optimiser and method state, PRNG key, counters)
  under the new run's settings; the state layout is still checked on restore, so a branch
  whose flow or method does not fit the checkpoint is refused there.

  Returns:
    The number of completed steps of the checkpoint branched from.

  Raises:
    CheckpointError: no such checkpoint, or the new folder already holds one.
  """
  found = sorted((int(d) for d in os.listdir(src_dir) if d.isdigit()), reverse=True
                 ) if os.path.isdir(src_dir) else []
  if not found:
    raise CheckpointError(f"no checkpoint to branch from in {src_dir}")
  n = found[0] if n_done is None else int(n_done)
  if n not in found:
    raise CheckpointError(f"no checkpoint after {n} steps in {src_dir}; there are: "
                          f"{', '.join(str(k) for k in sorted(found))}")
  dst = options.directory
  if os.path.isdir(dst) and any(d.isdigit() for d in os.listdir(dst)):
    raise CheckpointError(f"{dst} already holds checkpoints; branch into a new output folder")
  if jax.process_index() == 0:
    os.makedirs(dst, exist_ok=True)
    shutil.copytree(os.path.join(src_dir, str(n)), os.path.join(dst, str(n)))
    history = os.path.join(src_dir, HISTORY_FILE)
    if os.path.isfile(history):
      shutil.copyfile(history, os.path.join(dst, HISTORY_FILE))
    meta_file = os.path.join(dst, str(n), "meta", "metadata")
    with open(meta_file) as f:
      meta = json.load(f)
    meta.update(fingerprint=options.fingerprint,
                config=json.loads(json.dumps(options.config, default=json_default)))
    with open(meta_file, "w") as f:
      json.dump(meta, f, default=json_default)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("cmtjax: branch copied")
  return n


def config_differences(old: Optional[dict], new: Optional[dict], limit: int = 5) -> str:
  """``"cmt.eps_tr: 0.3 vs 0.2, seed: 0 vs 1"``: the dotted keys where two nested config
  dicts differ (at most ``limit``, then a count); empty when either is unknown."""
  if not isinstance(old, dict) or not isinstance(new, dict):
    return ""
  flat_old, flat_new = _flatten(old), _flatten(new)
  keys = sorted(set(flat_old) | set(flat_new))
  missing = object()
  diffs = [f"{k}: {flat_old.get(k, '(unset)')!r} vs {flat_new.get(k, '(unset)')!r}"
           for k in keys if flat_old.get(k, missing) != flat_new.get(k, missing)]
  more = f", and {len(diffs) - limit} more" if len(diffs) > limit else ""
  return ", ".join(diffs[:limit]) + more


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _short(error: Exception, n: int = 200) -> str:
  text = str(error).strip().splitlines()
  text = text[0] if text else ""
  return text if len(text) <= n else text[:n] + "..."


def _version() -> str:
  from cmtjax import __version__
  return __version__

