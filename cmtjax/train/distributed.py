"""Multi-process (multi-host) runs through ``jax.distributed``.

Each process runs the same program on its own devices; :func:`initialize` connects them, after
which ``jax.devices()`` lists the devices of all processes and the run's mesh
(:func:`cmtjax.train.sharding.make_mesh` with ``devices="all"``) spans them: every process
holds its share of the buffer and a replica of the parameters, and the step's reductions run
over all devices of all processes.

The coordinator address, process count and process id come from the arguments, else from the
environment variables ``CMTJAX_COORDINATOR`` (``host:port`` of process 0),
``CMTJAX_NUM_PROCESSES`` and ``CMTJAX_PROCESS_ID``. With none of them set the run is a plain
single-process run. On CPU the cross-process collectives use gloo.

Call :func:`initialize` before anything touches a JAX device.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import jax

ENV_COORDINATOR = "CMTJAX_COORDINATOR"
ENV_NUM_PROCESSES = "CMTJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "CMTJAX_PROCESS_ID"


class ProcessInfo(NamedTuple):
  """Where this process sits in a run.

  Attributes:
    coordinator: ``host:port`` of process 0 (None for a single-process run).
    num_processes: number of processes.
    process_id: this process's index (0 is the primary, which writes the outputs).
  """

  coordinator: Optional[str]
  num_processes: int
  process_id: int


def resolve(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
            process_id: Optional[int] = None) -> ProcessInfo:
  """Fills the process layout from the arguments, then the environment, then defaults.

  Raises:
    ValueError: an incomplete or inconsistent layout.
  """
  coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
  if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
    num_processes = int(os.environ[ENV_NUM_PROCESSES])
  if process_id is None and os.environ.get(ENV_PROCESS_ID):
    process_id = int(os.environ[ENV_PROCESS_ID])
  if coordinator is None:
    if (num_processes or 1) > 1:
      raise ValueError(f"{num_processes} processes requested but no coordinator address "
                       f"(--coordinator or {ENV_COORDINATOR})")
    return ProcessInfo(None, 1, 0)
  if num_processes is None or process_id is None:
    raise ValueError(f"a multi-process run needs the process count and this process's id "
                     f"(flags or {ENV_NUM_PROCESSES} / {ENV_PROCESS_ID})")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"process id {process_id} is not in [0, {num_processes})")
  return ProcessInfo(coordinator, int(num_processes), int(process_id))


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> ProcessInfo:
  """Connects this process to a multi-process run (no-op for a single-process layout).

  Args:
    coordinator: ``host:port`` of process 0.
    num_processes: number of processes.
    process_id: this process's index.

  Returns:
    The :class:`ProcessInfo` in use.
  """
  info = resolve(coordinator, num_processes, process_id)
  if info.coordinator is None:
    return info
  # Cross-process collectives on CPU devices (a no-op for accelerator platforms).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=info.coordinator,
                             num_processes=info.num_processes, process_id=info.process_id)
  return info


def is_primary() -> bool:
  """True in process 0 (the one that writes files)."""
  return jax.process_index() == 0
