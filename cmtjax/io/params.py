"""Flow parameters on disk: ``params.msgpack`` (flax serialisation) of a run folder.

Every reader checks the file against the flow it is meant for (the tree and every shape), so
parameters of another flow configuration are a clear error, not a silently wrong flow.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

PARAMS_FILE = "params.msgpack"


def params_path(path: str) -> str:
  """``path`` itself, or ``path/params.msgpack`` for a run folder."""
  return os.path.join(path, PARAMS_FILE) if os.path.isdir(path) else path


def write_params(path: str, params: Any) -> None:
  """Writes ``params`` to ``path`` (a file name)."""
  from flax import serialization
  with open(path, "wb") as f:
    f.write(serialization.to_bytes(jax.device_get(params)))


def read_params(path: str, template: Any, what: str = "the flow") -> Any:
  """Reads parameters shaped like ``template`` (e.g. ``flow.init(key)``).

  Args:
    path: a ``params.msgpack`` file or a run folder holding one.
    template: parameters of the flow they must fit.
    what: how the error messages name that flow.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file does not hold parameters of that flow (another tree or shapes).
  """
  from flax import serialization
  file = params_path(path)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"no flow parameters at {path!r} (expected a {PARAMS_FILE} file "
                            f"or a run folder holding one)")
  with open(file, "rb") as f:
    data = f.read()
  try:
    params = serialization.from_bytes(template, data)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{file} does not fit {what}: {e}") from None
  got, want = jax.tree.map(np.shape, params), jax.tree.map(np.shape, template)
  if got != want:
    diff = [f"{jax.tree_util.keystr(p)}: {a} in the file, {b} expected"
            for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(got),
                                 jax.tree.leaves(want)) if a != b]
    raise ValueError(f"{file} does not fit {what} (parameter shapes differ: "
                     f"{'; '.join(diff[:3]) or 'tree structure'})")
  return params
