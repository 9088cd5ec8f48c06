"""Checkpoints of a training run (orbax), written atomically, and their restoration.

A checkpoint after ``n`` completed outer steps is the folder ``DIR/n/`` with two items:

  state   the loop's arrays (orbax PyTree format, no pickle): the :class:`TrainState`
          (params, optimiser state, method state: e.g. CMT's multipliers and path) and the
          run's PRNG key. The key of step i is ``fold_in(key, i)``, so with the key and the
          step index the run continues exactly where it stopped.
  meta    JSON: format version, the run's fingerprint (a hash of its configuration),
          cmtjax version, ``n`` and the loop's host counters (target evaluations, gradient
          steps, wall time, consecutive stalled steps), the signature of the state (path,
          shape and dtype of every leaf) and the step records and evaluations so far (so that
          ``steps.jsonl`` and ``evals.jsonl`` are rebuilt without duplicates on resume).

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
import warnings
from typing import Any, NamedTuple, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from cmtjax.train.state import TrainState

FORMAT_VERSION = 1


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
  """

  directory: str
  every: int = 1
  keep: int = 3
  fingerprint: str = ""

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
    meta = {"format": FORMAT_VERSION, "fingerprint": self.options.fingerprint,
            "cmtjax_version": _version(), "n_done": int(n_done), "host": host,
            "signature": signature(tree), "records": records, "evals": evals}
    meta = json.loads(json.dumps(meta, default=_json_default))
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
      _check_compatible(meta, self.options.fingerprint, expected, path)
      try:
        tree = self._manager.restore(n, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(like))).state
      except Exception as e:  # noqa: BLE001
        problems.append(self._set_aside(n, path, e))
        continue
      self.last_path = path
      return Restored(n_done=int(meta["n_done"]), state=tree["state"],
                      key=jax.numpy.asarray(tree["key"]),
                      host=dict(meta["host"]), records=list(meta["records"]),
                      evals=list(meta["evals"]), path=path)
    raise CheckpointError(f"no readable checkpoint in {self.directory}: " + "; ".join(problems))

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


def _check_compatible(meta: dict, fp: str, expected: list, path: str) -> None:
  if meta.get("format") != FORMAT_VERSION:
    raise IncompatibleCheckpointError(
        f"checkpoint {path} has format {meta.get('format')!r}; this cmtjax reads format "
        f"{FORMAT_VERSION}")
  if meta.get("fingerprint") != fp:
    raise IncompatibleCheckpointError(
        f"checkpoint {path} was written by a run with another configuration (fingerprint "
        f"{meta.get('fingerprint')!r}, this run {fp!r}); resume with the run's own "
        f"config.json or start a new output folder")
  got = meta.get("signature")
  if got != expected:
    diff = next(((g, e) for g, e in zip(got or [], expected) if g != e), None)
    detail = (f"first difference: checkpoint {diff[0]} vs run {diff[1]}" if diff else
              f"{len(got or [])} arrays in the checkpoint vs {len(expected)} in the run")
    raise IncompatibleCheckpointError(
        f"checkpoint {path} does not match this run's state layout ({detail})")


def _short(error: Exception, n: int = 200) -> str:
  text = str(error).strip().splitlines()
  text = text[0] if text else ""
  return text if len(text) <= n else text[:n] + "..."


def _version() -> str:
  from cmtjax import __version__
  return __version__


def _json_default(o):
  if isinstance(o, (np.floating, np.integer, np.bool_)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")
