"""Trajectory output (DCD + PDB round trip through mdtraj) and molecular plots."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cmtjax.io.molecular_plots import plot_energy_histograms, plot_ramachandran
from cmtjax.io.trajectory import save_trajectory

mdtraj = pytest.importorskip("mdtraj")

_PDB = os.path.join(os.path.dirname(__file__), "..", "..", "cmtjax", "targets", "molecules",
                    "data", "aldp.pdb")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def aldp_x():
  """[6, 66] perturbed copies of the alanine-dipeptide minimum, in nm."""
  x0 = mdtraj.load(_PDB).xyz.reshape(1, -1).astype(np.float64)
  return x0 + 0.02 * np.random.default_rng(0).normal(size=(6, x0.shape[1]))


def test_trajectory_round_trip(tmp_path, aldp_x):
  dcd, pdb = save_trajectory(str(tmp_path / "sub" / "samples"), aldp_x, _PDB)
  assert dcd.endswith("samples.dcd") and pdb.endswith("samples.pdb")
  traj = mdtraj.load(dcd, top=pdb)
  assert traj.n_frames == 6 and traj.n_atoms == 22
  np.testing.assert_allclose(traj.xyz.reshape(6, -1), aldp_x, atol=1e-3)
  first = mdtraj.load(pdb)
  np.testing.assert_allclose(first.xyz.reshape(-1), aldp_x[0], atol=1e-3)
  assert [a.name for a in first.topology.atoms] == [
      a.name for a in mdtraj.load_topology(_PDB).atoms]


def test_trajectory_thinning_and_nonfinite(tmp_path, aldp_x):
  dcd, pdb = save_trajectory(str(tmp_path / "thin"), aldp_x, _PDB, max_frames=3)
  traj = mdtraj.load(dcd, top=pdb)
  assert traj.n_frames == 3
  np.testing.assert_allclose(traj.xyz.reshape(3, -1), aldp_x[[0, 2, 5]], atol=1e-3)
  bad = aldp_x.copy()
  bad[1, 4] = np.nan
  with pytest.warns(UserWarning, match="dropping 1 of 6"):
    dcd, pdb = save_trajectory(str(tmp_path / "nan"), bad.reshape(6, 22, 3), _PDB)
  assert mdtraj.load(dcd, top=pdb).n_frames == 5


def test_trajectory_errors(tmp_path, aldp_x):
  with pytest.raises(ValueError, match="21 atoms per frame but"):
    save_trajectory(str(tmp_path / "a"), aldp_x[:, :63], _PDB)
  with pytest.raises(ValueError, match="shape"):
    save_trajectory(str(tmp_path / "b"), aldp_x[:, :65], _PDB)
  with pytest.raises(ValueError, match="shape"):
    save_trajectory(str(tmp_path / "c"), aldp_x[0], _PDB)
  with pytest.raises(FileNotFoundError):
    save_trajectory(str(tmp_path / "d"), aldp_x, str(tmp_path / "missing.pdb"))


def _is_png(path) -> bool:
  with open(path, "rb") as f:
    return f.read(8) == _PNG_MAGIC


def test_plots_write_pngs(tmp_path):
  rng = np.random.default_rng(1)
  model = np.pi - np.mod(np.pi - rng.normal([-1.4, 2.6], 0.4, size=(3000, 2, 2)), 2 * np.pi)
  ref = np.pi - np.mod(np.pi - rng.normal([-1.2, 2.2], 0.5, size=(2000, 2, 2)), 2 * np.pi)
  w = rng.uniform(size=3000)
  p = plot_ramachandran(str(tmp_path / "rama.png"), model, ref, model_weights=w, title="t")
  assert _is_png(p)
  p = plot_ramachandran(str(tmp_path / "rama_all.png"), model, ref, pairs="all")
  assert _is_png(p)
  p = plot_ramachandran(str(tmp_path / "rama_one.png"), model[:, 1], ref[:, 1])
  assert _is_png(p)
  with pytest.raises(ValueError, match="out of range"):
    plot_ramachandran(str(tmp_path / "bad.png"), model, ref, pairs=[2])
  e_ref = rng.normal(size=2000) * 8.0 - 60.0
  e_model = np.concatenate([rng.normal(size=2990) * 10.0 - 55.0, np.full(9, 1e6), [np.nan]])
  p = plot_energy_histograms(str(tmp_path / "energy.png"), e_model, e_ref,
                             model_weights=rng.uniform(size=3000), title="energies")
  assert _is_png(p)
  assert _is_png(plot_energy_histograms(str(tmp_path / "energy_plain.png"), e_model, e_ref))
