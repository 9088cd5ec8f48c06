"""Data-parallel sharding of a run over a 1-D device mesh along the sample axis.

A run on several devices uses a mesh with one axis, ``"batch"``. Parameters, optimiser
state and method state are replicated on every device; the arrays whose leading axis is the
sample axis (the buffer's samples, their model and target log densities, the importance
weights, the minibatches of a fit) are split over the mesh. Methods mark those arrays with
:func:`shard_batch` inside their jitted step; the compiler then partitions the sampling, the
target evaluations and the per-sample flow evaluations over the devices and inserts the
reductions (the dual's sums over the buffer, the gradient means over a minibatch) as
all-reduces over ``"batch"``.

Outside a mesh (``jax.set_mesh`` not active: the default single-device run)
:func:`shard_batch` is the identity, so the same step code serves one CPU and many devices.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def resolve_devices(devices: Union[int, str] = 1) -> list:
  """The devices a run uses.

  Args:
    devices: ``"all"`` (every device of every process: ``jax.devices()``) or a count n >= 1
      (the first n of ``jax.devices()``).

  Returns:
    A list of ``jax.Device``.
  """
  available = jax.devices()
  if devices == "all":
    return list(available)
  n = int(devices)
  if n < 1:
    raise ValueError(f"devices must be 'all' or >= 1, got {devices!r}")
  if n > len(available):
    raise ValueError(f"{n} devices requested but only {len(available)} are available "
                     f"({available[0].platform})")
  return list(available[:n])


def make_mesh(devices: Union[int, str] = "all") -> Optional[Mesh]:
  """A 1-D mesh with axis ``"batch"`` over ``devices``.

  Args:
    devices: as in :func:`resolve_devices`.

  Returns:
    The mesh, or None when the run uses a single device of a single process (the plain
    single-device path, with no sharding annotations at all).
  """
  devs = resolve_devices(devices)
  if len(devs) == 1 and jax.process_count() == 1:
    return None
  return Mesh(np.asarray(devs), (BATCH_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of parameters and state: a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The sharding of sample-axis arrays: leading axis split over ``"batch"``."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
  """Places every leaf of ``tree`` replicated on ``mesh`` (identity for ``mesh=None``).

  In a multi-process run every process must pass the same values (they are, since every
  process derives them from the same seed).
  """
  if mesh is None:
    return tree
  return jax.device_put(tree, replicated(mesh))


def shard_batch(tree: Any) -> Any:
  """Marks the leading (sample) axis of every leaf as split over the ``"batch"`` mesh axis.

  Call inside a jitted step on arrays ``[N, ...]`` whose rows are independent samples.
  Without an active mesh that has a ``"batch"`` axis this is the identity. Scalars are left
  alone. N need not be a multiple of the device count (the compiler pads), but a multiple
  balances the work.

  Args:
    tree: a pytree of arrays with a leading sample axis.

  Returns:
    ``tree`` with sharding constraints attached.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or BATCH_AXIS not in mesh.axis_names:
    return tree

  def constrain(x):
    if getattr(x, "ndim", 0) < 1:
      return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec(BATCH_AXIS))

  return jax.tree_util.tree_map(constrain, tree)
