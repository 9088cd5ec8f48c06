"""Samples as a molecular trajectory: a DCD file plus a PDB of its topology (mdtraj).

``save_trajectory("out/samples", x, pdb_path)`` writes ``out/samples.dcd`` (all frames) and
``out/samples.pdb`` (topology and first frame), which VMD, PyMOL or
``mdtraj.load("out/samples.dcd", top="out/samples.pdb")`` read back. DCD stores float32
positions in Å, so coordinates round-trip to ~1e-6 nm relative precision; the PDB frame holds
3 decimals in Å (1e-4 nm).
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import numpy as np


def save_trajectory(
    path_stem: str,
    x,
    pdb_path: str,
    max_frames: Optional[int] = 10000,
) -> tuple[str, str]:
  """Writes configurations as ``<path_stem>.dcd`` plus ``<path_stem>.pdb``.

  Frames with a non-finite coordinate are dropped (with a warning). When more than
  ``max_frames`` remain, ``max_frames`` evenly spaced frames are kept (first and last
  included), which thins an MD trajectory and is an unbiased subset of i.i.d. samples.

  Args:
    path_stem: output path without extension; its folder is created if missing.
    x: [n, 3 * n_atoms] positions in nm (atom-major), or [n, n_atoms, 3].
    pdb_path: PDB file of the molecule (its atom order must match ``x``).
    max_frames: most frames written (None for all).

  Returns:
    ``(dcd_path, pdb_path)`` of the written files.

  Raises:
    ValueError: ``x`` has the wrong shape, its atom count differs from the PDB's, no frame is
      finite, or ``max_frames`` < 1.
    FileNotFoundError: ``pdb_path`` does not exist.
  """
  import mdtraj  # the molecular extra; imported only here

  if not os.path.exists(pdb_path):
    raise FileNotFoundError(f"topology file {pdb_path!r} does not exist")
  if max_frames is not None and max_frames < 1:
    raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
  topology = mdtraj.load_topology(pdb_path)
  n_atoms = topology.n_atoms
  x = np.asarray(x)
  if x.ndim == 3 and x.shape[2] == 3:
    x = x.reshape(x.shape[0], -1)
  if x.ndim != 2 or x.shape[1] % 3:
    raise ValueError(f"x must be [n, 3 * n_atoms] (or [n, n_atoms, 3]), got shape {x.shape}")
  if x.shape[1] != 3 * n_atoms:
    raise ValueError(f"x has {x.shape[1] // 3} atoms per frame but {pdb_path!r} has "
                     f"{n_atoms} atoms")
  finite = np.all(np.isfinite(x), axis=1)
  if not finite.all():
    warnings.warn(f"save_trajectory: dropping {int(np.sum(~finite))} of {x.shape[0]} frames "
                  "with non-finite coordinates")
    x = x[finite]
  if x.shape[0] == 0:
    raise ValueError("no finite frame to write")
  if max_frames is not None and x.shape[0] > max_frames:
    x = x[np.unique(np.round(np.linspace(0, x.shape[0] - 1, max_frames)).astype(np.int64))]
  traj = mdtraj.Trajectory(xyz=x.reshape(x.shape[0], n_atoms, 3).astype(np.float32),
                           topology=topology)
  folder = os.path.dirname(os.path.abspath(path_stem))
  os.makedirs(folder, exist_ok=True)
  dcd, pdb = f"{path_stem}.dcd", f"{path_stem}.pdb"
  traj.save_dcd(dcd)
  traj[0].save_pdb(pdb)
  return dcd, pdb
