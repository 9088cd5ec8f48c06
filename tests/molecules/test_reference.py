"""Reference samples: the replica-exchange swap move and a short run
(``cmtjax.sampling.replica_exchange``), the files (``cmtjax.targets.molecules.reference``), the
alanine-dipeptide basins (``cmtjax.metrics.basins``) and the shipped set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmtjax.metrics.basins import aldp_basin_populations, aldp_basin_populations_by_block
from cmtjax.metrics.molecular import backbone_angles
from cmtjax.sampling.replica_exchange import replica_exchange, swap_neighbours
from cmtjax.sampling.temperatures import geometric_ladder
from cmtjax.targets.molecules import reference as ref
from cmtjax.targets.molecules.parameters import MOLAR_GAS_CONSTANT
from cmtjax.targets.molecules.topology import (backbone_dihedral_pairs, chiral_centres,
                                               chirality_signs, load_topology, wrong_chirality)
from molecular_reference import molecular_system


# ---------------------------------------------------------------------------------------------
# The swap move.


def test_swap_probability_is_the_metropolis_ratio_and_favours_cold_low_energy():
  betas = jnp.array([1.0, 0.5, 0.25])
  # Walker 0: the cold slot holds the higher energy -> always swap. Walker 1: the reverse.
  energies = jnp.array([[3.0, 1.0], [1.0, 3.0], [0.0, 0.0]])
  swap = swap_neighbours(jax.random.key(0), energies, betas, jnp.array(0))
  np.testing.assert_array_equal(swap.attempted, [True, False])
  np.testing.assert_allclose(swap.acceptance_probability[0], [1.0, np.exp(-0.5 * 2.0)],
                             rtol=1e-6)
  np.testing.assert_array_equal(swap.acceptance_probability[1], [0.0, 0.0])
  assert bool(swap.accepted[0, 0]) and not bool(swap.accepted[1].any())
  np.testing.assert_array_equal(swap.source[:, 0], [1, 0, 2])
  # Odd parity: only the pair (1, 2) is attempted; (0.5 - 0.25) * (1 - 0) > 0 for walker 0.
  swap = swap_neighbours(jax.random.key(0), energies, betas, jnp.array(1))
  np.testing.assert_array_equal(swap.attempted, [False, True])
  np.testing.assert_allclose(swap.acceptance_probability[1], [1.0, 1.0])
  np.testing.assert_array_equal(swap.source[:, 0], [0, 2, 1])


def test_swap_move_leaves_the_product_ensemble_invariant():
  """Harmonic oscillators E = x^2 / 2 at four temperatures, sampled exactly: after swap rounds
  of both parities every slot must still hold N(0, k_B T_slot). A sign error in the criterion
  moves high energies to the cold slots (there the variance triples)."""
  temps = np.array([300.0, 400.0, 550.0, 750.0])
  kt = MOLAR_GAS_CONSTANT * temps
  n = 200_000
  key = jax.random.key(1)
  x = jnp.sqrt(jnp.asarray(kt))[:, None] * jax.random.normal(key, (4, n))
  accepted = []
  for k in range(4):
    swap = swap_neighbours(jax.random.fold_in(key, k), 0.5 * x**2, 1.0 / jnp.asarray(kt),
                           jnp.array(k % 2))
    x = jnp.take_along_axis(x, swap.source, axis=0)
    accepted.append(np.asarray(swap.accepted.mean(axis=1)))
  var = np.asarray(jnp.var(x, axis=1))
  # Standard error of a variance from 2e5 samples: sqrt(2 / n) = 0.3 %.
  np.testing.assert_allclose(var / kt, 1.0, atol=0.015)
  kurtosis = np.asarray(jnp.mean(x**4, axis=1)) / var**2
  np.testing.assert_allclose(kurtosis, 3.0, atol=0.06)
  assert 0.2 < np.max(accepted) < 0.95  # the move actually moves


def test_geometric_ladder():
  t = geometric_ladder(300.0, 700.0, 6)
  np.testing.assert_allclose(t[[0, -1]], [300.0, 700.0])
  np.testing.assert_allclose(t[1:] / t[:-1], (700 / 300) ** 0.2)
  np.testing.assert_array_equal(geometric_ladder(300.0, 700.0, 1), [300.0])
  with pytest.raises(ValueError, match="0 < t_cold <= t_hot"):
    geometric_ladder(300.0, 200.0, 3)


# ---------------------------------------------------------------------------------------------
# A short replica-exchange run on alanine dipeptide.


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
  empty = tmp_path_factory.mktemp("empty_data")
  old = os.environ.get("CMTJAX_DATA")
  os.environ["CMTJAX_DATA"] = str(empty)  # no cached set: the loader must fall back
  try:
    return ref.load_reference_set("aldp")
  finally:
    if old is None:
      del os.environ["CMTJAX_DATA"]
    else:
      os.environ["CMTJAX_DATA"] = old


def test_tiny_replica_exchange_run_on_aldp(shipped):
  system = molecular_system("aldp")
  temps = [300.0, 360.0, 432.0]
  res = replica_exchange(system, jax.random.key(0), temperatures=temps, n_walkers=8,
                         n_steps=1000, burn_in=1000, save_every=100, swap_every=50,
                         friction=5.0, frames_per_call=10)
  assert res.positions.shape == (80, 66) and res.positions.dtype == np.float32
  assert res.energies.shape == (80,) and np.all(np.isfinite(res.energies))
  np.testing.assert_array_equal(np.bincount(res.walker), [10] * 8)
  # Frames are the cold slot's: their stored energies are the energies of their positions.
  np.testing.assert_allclose(np.asarray(system.energy(jnp.asarray(res.positions))),
                             res.energies, atol=0.05, rtol=1e-4)
  assert np.all(np.diff(res.mean_energies) > 0), res.mean_energies
  # 300 K potential energy near the long reference run's (per-frame sd ~14 kJ/mol; 80
  # correlated frames after 1 ps of burn-in from the minimum, friction 5/ps).
  assert abs(res.energies.mean() - shipped.energies.mean()) < 15.0
  # Momenta rescaled on swaps: every slot stays near its bath temperature (BAOAB's full-step
  # momenta run a few per cent cold).
  np.testing.assert_allclose(res.kinetic_temperature / np.array(temps), 0.96, atol=0.08)
  acc = res.swap_acceptance
  assert acc.shape == (2,) and np.all(acc > 0.2), acc
  p = res.protocol
  assert p["energy_evaluations"] == 3 * 8 * 2001
  assert p["temperatures_K"] == temps and p["n_frames"] == 80
  json.dumps(p)


def test_an_interrupted_run_resumes_to_the_frames_of_an_uninterrupted_one(tmp_path):
  """The checkpoint folder: killed after a call (in burn-in or production), the run continues
  where it stopped and gives the same frames; other settings are refused by name."""
  system = molecular_system("aldp")
  kw = dict(temperatures=[300.0, 400.0], n_walkers=2, n_steps=400, burn_in=200,
            save_every=50, swap_every=25, frames_per_call=2)
  whole = replica_exchange(system, jax.random.key(3), **kw)

  class Killed(Exception):
    pass

  for stop_after in (1, 4):  # in burn-in (4 frames, 2 calls), then in production
    calls = []

    def kill(info, stop_after=stop_after, calls=calls):
      calls.append(info)
      if len(calls) == stop_after:
        raise Killed

    folder = str(tmp_path / f"ckpt{stop_after}")
    with pytest.raises(Killed):
      replica_exchange(system, jax.random.key(3), **kw, progress=kill, checkpoint=folder)
    seen = []
    resumed = replica_exchange(system, jax.random.key(3), **kw, checkpoint=folder,
                               progress=seen.append)
    assert len(calls) + len(seen) == 2 + 4  # no call is repeated or skipped
    np.testing.assert_array_equal(resumed.positions, whole.positions)
    np.testing.assert_array_equal(resumed.energies, whole.energies)
    np.testing.assert_array_equal(resumed.swap_acceptance, whole.swap_acceptance)
  with pytest.raises(ValueError, match="n_walkers: 2 there, 3 now"):
    replica_exchange(system, jax.random.key(3), **(kw | {"n_walkers": 3}),
                     checkpoint=str(tmp_path / "ckpt1"))
  # The production length may change when a run continues: it ends where an uninterrupted run
  # of the new length ends (a long generation stopped early with what it has, or extended).
  # (Every call's key depends on where it starts: a run of 200 steps makes the first two
  # production calls of the run of 400, and gives its first four frames per walker.)
  short = whole.positions.reshape(2, 8, -1)[:, :4].reshape(8, -1)
  folder = str(tmp_path / "ckpt_len")
  calls = []

  def kill_after_three(info):  # burn-in's two calls and one production call
    calls.append(info)
    if len(calls) == 3:
      raise Killed

  with pytest.raises(Killed):
    replica_exchange(system, jax.random.key(3), **kw, checkpoint=folder,
                     progress=kill_after_three)
  got = replica_exchange(system, jax.random.key(3), **(kw | {"n_steps": 200}),
                         checkpoint=folder)
  np.testing.assert_array_equal(got.positions, short)
  assert got.protocol["production_steps"] == 200
  longer = replica_exchange(system, jax.random.key(3), **kw, checkpoint=folder)  # and extended
  np.testing.assert_array_equal(longer.positions, whole.positions)
  with pytest.raises(ValueError, match="400 production steps, more than the 200"):
    replica_exchange(system, jax.random.key(3), **(kw | {"n_steps": 200}), checkpoint=folder)


# ---------------------------------------------------------------------------------------------
# Files.


def _write(path, n_atoms, n=5):
  return ref.save_reference(str(path), name="x", positions=np.zeros((n, 3 * n_atoms)),
                            energies=np.zeros(n), walker=np.arange(n), temperature=300.0,
                            protocol={"note": "test"})


def test_load_reference_missing_files_name_the_command(tmp_path, monkeypatch):
  monkeypatch.setenv("CMTJAX_DATA", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="cmtjax reference --target aldp"):
    ref.load_reference("aldp", path=str(tmp_path / "nope.npz"))
  # A built-in molecule with neither a cached nor a shipped set (the shipped one hidden here).
  monkeypatch.setattr(ref, "shipped_reference_path",
                      lambda name: str(tmp_path / "none" / f"{name}_reference.npz"))
  with pytest.raises(FileNotFoundError, match=r"cmtjax reference --target ala6.*"):
    ref.load_reference("ala6")
  # A molecule of the user's own: only the cache is searched; the hint names its PDB.
  with pytest.raises(FileNotFoundError, match=r"cmtjax reference --target my/water.pdb"):
    ref.load_reference("water", spec="my/water.pdb")
  _write(tmp_path / "reference" / "water.npz", n_atoms=3)
  assert ref.load_reference("water").shape == (5, 9)
  with pytest.raises(ValueError, match="4 atoms"):
    ref.load_reference("water", n_atoms=4)


def test_load_reference_checks_the_atom_count(tmp_path):
  path = _write(tmp_path / "aldp_like.npz", n_atoms=22)
  with pytest.raises(ValueError, match="42 atoms"):
    ref.load_reference("ala4", path=path)
  assert ref.load_reference("aldp", path=path).shape == (5, 66)


def test_load_reference_prefers_the_cached_set(tmp_path, monkeypatch):
  monkeypatch.setenv("CMTJAX_DATA", str(tmp_path))
  _write(tmp_path / "reference" / "aldp.npz", n_atoms=22, n=7)
  got = ref.load_reference_set("aldp")
  assert got.positions.shape == (7, 66) and got.positions.dtype == np.float32
  assert got.path == str(tmp_path / "reference" / "aldp.npz")
  assert got.protocol == {"note": "test"} and got.temperature == 300.0
  np.testing.assert_array_equal(got.walker, np.arange(7))


def test_moved_names_still_read_from_reference_and_no_import_cycle():
  assert ref.replica_exchange is replica_exchange and ref.swap_neighbours is swap_neighbours
  assert ref.aldp_basin_populations is aldp_basin_populations
  with pytest.raises(AttributeError):
    ref.no_such_name  # pylint: disable=pointless-statement
  # The sampler imports the molecules package, which imports reference: either order works.
  for first in ("cmtjax.sampling.replica_exchange", "cmtjax.targets.molecules.reference",
                "cmtjax.metrics.basins"):
    code = (f"import {first}; from cmtjax.sampling import make_replica_exchange, make_langevin; "
            "from cmtjax.targets.molecules.reference import replica_exchange, "
            "aldp_basin_populations, load_reference; from cmtjax.metrics import "
            "aldp_basin_populations_by_block")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# Basins and the shipped alanine-dipeptide set.


def test_aldp_basins_partition_the_ramachandran_plane():
  deg = np.pi / 180
  phi = np.array([-80, -80, -80, -80, -80, 60, 75]) * deg
  psi = np.array([150, -170, 70, -40, -135, 40, -65]) * deg
  pops = aldp_basin_populations(phi, psi)
  assert pops == pytest.approx({"beta_C5": 2 / 7, "C7eq_PII": 1 / 7, "alphaR": 1 / 7,
                                "phi_neg_other": 1 / 7, "phi_pos": 2 / 7})
  w = np.array([0, 0, 0, 1, 0, 0, 3.0])
  assert aldp_basin_populations(phi, psi, w)["phi_pos"] == pytest.approx(0.75)
  blocks = aldp_basin_populations_by_block(phi[:6], psi[:6], [0, 0, 0, 1, 1, 1])
  assert blocks["beta_C5"]["mean"] == pytest.approx(2 / 6)
  assert blocks["beta_C5"]["stderr"] == pytest.approx(np.std([2 / 3, 0], ddof=1) / np.sqrt(2))


def test_shipped_aldp_reference(shipped):
  system = molecular_system("aldp")
  assert shipped.path == os.path.abspath(ref.shipped_reference_path("aldp"))
  n = shipped.positions.shape[0]
  assert shipped.positions.shape == (n, 66) and 2000 <= n <= 6000
  assert shipped.positions.dtype == np.float32 and shipped.temperature == 300.0
  assert np.all(np.isfinite(shipped.energies))
  np.testing.assert_allclose(np.asarray(system.energy(jnp.asarray(shipped.positions))),
                             shipped.energies, atol=0.05, rtol=1e-4)
  assert shipped.protocol["temperatures_K"][0] == 300.0
  assert np.unique(shipped.walker).size >= 8
  top = load_topology(system.pdb_path)
  angles = backbone_angles(shipped.positions, top)[:, 0]  # alanine dipeptide: one pair
  pops = aldp_basin_populations(angles[:, 0], angles[:, 1])
  assert pops["beta_C5"] > 0.2 and pops["C7eq_PII"] > 0.01 and pops["alphaR"] > 0.05, pops
  assert 0.0 < pops["phi_pos"] < 0.1, pops
  centres = chiral_centres(top)
  signs = chirality_signs(system.positions.reshape(1, -1), centres)[0]
  assert not np.any(np.asarray(wrong_chirality(shipped.positions, centres, signs)))


def test_a_compact_set_keeps_every_frames_angles_and_a_decorrelated_subset(tmp_path):
  """`cmtjax reference --compact-from FULL --compact OUT`: angles and energies of every frame,
  coordinates of about one frame per autocorrelation time; the molecular report then takes
  its Ramachandran figures (and their walker-split floors) from all frames."""
  from cmtjax.cli import main
  from cmtjax.metrics.molecular import backbone_angles
  from cmtjax.targets.molecules.topology import load_topology
  shipped = ref.load_reference_set("aldp", ref.shipped_reference_path("aldp"))
  path = ref.save_reference(  # a full (old-style) set: coordinates of every frame
      str(tmp_path / "full.npz"), name="aldp", positions=shipped.positions,
      energies=shipped.energies, walker=shipped.walker, temperature=shipped.temperature,
      protocol=shipped.protocol)
  full = ref.load_reference_set("aldp", path)
  n = full.positions.shape[0]
  out = tmp_path / "compact.npz"
  assert main(["reference", "--target", "aldp", "--compact-from", full.path, "--compact",
               str(out), "--compact-frames", "1000"]) == 0
  got = ref.load_reference_set("aldp", str(out))
  assert got.all_angles.shape == (n, 1, 2) and got.all_energies.shape == (n,)
  np.testing.assert_array_equal(got.all_walker, full.walker)
  np.testing.assert_array_equal(got.all_energies, full.energies)
  top = load_topology(ref.shipped_reference_path("aldp").replace("_reference.npz", ".pdb"))
  np.testing.assert_allclose(got.all_angles, backbone_angles(full.positions, top), atol=1e-5)
  # Coordinates: a subset, spread over every walker, no more than asked for.
  assert 32 <= got.positions.shape[0] <= 1000
  assert set(np.unique(got.walker)) == set(np.unique(full.walker))
  summary = json.loads((tmp_path / "compact.json").read_text())
  tau = summary["compact"]["decorrelation"]["tau_max_frames"]
  assert tau >= 1.0 and got.protocol["compact"]["tau_max_frames"] == tau
  assert set(summary["reference"]["half_vs_half_tv"]) == {"100x100", "36x36"}
  per_pair = summary["reference"]["half_vs_half_tv_per_pair"]["36x36"]  # one pair: the mean
  assert per_pair == [pytest.approx(summary["reference"]["half_vs_half_tv"]["36x36"])]
  # An old-style file has no per-frame extras.
  assert full.all_angles is None
  # Independent runs pool, their walkers kept apart as blocks of their own.
  pooled = tmp_path / "pooled.npz"
  assert main(["reference", "--target", "aldp", "--compact-from", f"{full.path},{full.path}",
               "--compact", str(pooled), "--compact-frames", "100"]) == 0
  got = ref.load_reference_set("aldp", str(pooled))
  walkers = np.unique(full.walker).size
  assert got.all_angles.shape == (2 * n, 1, 2)
  assert np.unique(got.all_walker).size == 2 * walkers
  assert len(got.protocol["pooled_runs"]) == 2


def test_compact_pieces_of_a_generation_pool_into_the_set_they_split(tmp_path, capsys):
  """Pieces of a long generation made in separate sittings (independent walkers, each piece a
  compact set in git) pool with `--compact-from` into the compact set of all their walkers:
  the same angles, energies and walker blocks, the same noise floor; full and compact sets do
  not mix."""
  from cmtjax.cli import main
  shipped = ref.load_reference_set("aldp", ref.shipped_reference_path("aldp"))
  keep = shipped.all_walker < 8  # eight walkers: quick, still several blocks per piece
  whole = ref.save_reference(
      str(tmp_path / "whole.npz"), name="aldp", positions=shipped.positions[shipped.walker < 8],
      energies=shipped.energies[shipped.walker < 8], walker=shipped.walker[shipped.walker < 8],
      temperature=shipped.temperature, protocol=shipped.protocol,
      all_angles=shipped.all_angles[keep], all_energies=shipped.all_energies[keep],
      all_walker=shipped.all_walker[keep])
  pieces = []
  for k, walkers in enumerate(((0, 1, 2, 3), (4, 5, 6, 7))):
    rows, frames = np.isin(shipped.all_walker, walkers), np.isin(shipped.walker, walkers)
    pieces.append(ref.save_reference(
        str(tmp_path / f"piece{k}.npz"), name="aldp", positions=shipped.positions[frames],
        energies=shipped.energies[frames], walker=shipped.walker[frames] - 4 * k,
        temperature=shipped.temperature, protocol=dict(shipped.protocol, seed=k),
        all_angles=shipped.all_angles[rows], all_energies=shipped.all_energies[rows],
        all_walker=shipped.all_walker[rows] - 4 * k))  # each piece numbers its walkers from 0
  out = tmp_path / "pooled.npz"
  assert main(["reference", "--target", "aldp", "--compact-from", ",".join(pieces),
               "--compact", str(out)]) == 0
  got, want = ref.load_reference_set("aldp", str(out)), ref.load_reference_set("aldp", whole)
  np.testing.assert_array_equal(got.all_angles, want.all_angles)
  np.testing.assert_array_equal(got.all_energies, want.all_energies)
  np.testing.assert_array_equal(got.all_walker, want.all_walker)  # 0-3 and 4-7 again
  np.testing.assert_array_equal(got.positions, want.positions)
  np.testing.assert_array_equal(got.walker, want.walker)
  assert [p["seed"] for p in got.protocol["pooled_runs"]] == [0, 1]
  summary = json.loads((tmp_path / "pooled.json").read_text())["reference"]
  assert summary["n_frames"] == want.all_angles.shape[0]
  assert summary["structure_checks_on_frames"] == want.positions.shape[0]
  assert summary["wrong_chirality_fraction"] == 0.0
  from cmtjax.metrics.molecular import ramachandran_divergences
  floor = ramachandran_divergences(want.all_angles, want.all_angles,
                                   ref_blocks=want.all_walker, bins=36)["tv_floor_reference"]
  assert summary["half_vs_half_tv"]["36x36"] == pytest.approx(floor)
  assert summary["basin_populations"]["phi_pos"]["mean"] == pytest.approx(
      aldp_basin_populations(want.all_angles[:, 0, 0], want.all_angles[:, 0, 1])["phi_pos"])
  # At most --compact-frames coordinates, spread over every walker.
  assert main(["reference", "--target", "aldp", "--compact-from", ",".join(pieces),
               "--compact", str(tmp_path / "small.npz"), "--compact-frames", "80"]) == 0
  small = ref.load_reference_set("aldp", str(tmp_path / "small.npz"))
  assert small.positions.shape[0] <= 80 and np.unique(small.walker).size == 8
  full = ref.save_reference(
      str(tmp_path / "full.npz"), name="aldp", positions=shipped.positions[:200],
      energies=shipped.energies[:200], walker=shipped.walker[:200],
      temperature=shipped.temperature, protocol=shipped.protocol)
  assert main(["reference", "--target", "aldp", "--compact-from", f"{pieces[0]},{full}",
               "--compact", str(tmp_path / "x.npz")]) == 2
  assert "pool either full sets or compact sets" in capsys.readouterr().err


def test_reference_sets_are_kept_apart_by_force_field_temperature_and_file(tmp_path):
  from cmtjax.targets.molecules import load_molecular_system, make_molecular_system
  valdp = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "valdp.pdb")
  aldp = load_molecular_system("aldp").target
  assert ref.shipped_molecule(aldp) == "aldp" and ref.reference_key(aldp) == "aldp"
  amber14 = load_molecular_system("aldp", forcefield_files=(
      "amber14-all.xml", "implicit/obc2.xml")).target
  warm = load_molecular_system("aldp", temperature=350.0).target
  assert ref.reference_key(amber14).startswith("aldp_ff") and ref.reference_key(warm) == "aldp_350K"
  # A user's file named aldp.pdb is not the shipped molecule.
  copy = tmp_path / "aldp.pdb"
  copy.write_text(open(valdp).read())
  mine = make_molecular_system(str(copy)).target
  assert ref.shipped_molecule(mine) is None and ref.reference_key(mine).startswith("aldp_")
  shipped = ref.load_reference_set("aldp", ref.shipped_reference_path("aldp"))
  assert ref.reference_mismatch(shipped, aldp) is None
  assert "350 K" in ref.reference_mismatch(shipped, warm)
  made_with = shipped._replace(protocol=dict(shipped.protocol, forcefield_files=[
      "amber99sbildn.xml", "amber99_obc.xml"]))
  assert "amber14-all.xml" in ref.reference_mismatch(made_with, amber14)


def test_the_pieces_table_has_a_column_per_committed_piece():
  """experiments/molecules/pieces_table.py: one column per summary, the figures read from it."""
  import glob
  import importlib.util
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  spec = importlib.util.spec_from_file_location(
      "pieces_table", os.path.join(root, "experiments", "molecules", "pieces_table.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  paths = sorted(glob.glob(os.path.join(root, "experiments", "molecules", "reference_pieces",
                                        "elil_s*.json")))
  assert paths
  lines = mod.table(paths).splitlines()
  assert len(lines[0].split("|")) == len(paths) + 3
  with open(paths[0]) as f:
    summary = json.load(f)
  eff = summary["reference"]["decorrelation"]["effective_samples"]
  (row,) = [line for line in lines if line.startswith("| effective samples |")]
  assert row.split("|")[2].strip() == f"{eff:.0f}"
  with pytest.raises(SystemExit, match="no summary"):
    mod.table([os.path.join(root, "nope.json")])


@pytest.mark.parametrize("name", [n for n in ("ala4", "ala6", "elil")
                                  if os.path.isfile(ref.shipped_reference_path(n))])
def test_shipped_compact_sets_of_the_larger_peptides(name):
  """Each shipped compact set: its frames' energies are the system's, its backbone angles are
  those of its frames, it has every frame's angles, and no frame is wrong-handed."""
  shipped = ref.load_reference_set("reference", ref.shipped_reference_path(name))
  system = molecular_system(name)
  n = shipped.positions.shape[0]
  assert shipped.positions.shape == (n, 3 * system.n_atoms) and n >= 500
  assert shipped.temperature == 300.0 and shipped.all_angles is not None
  assert np.unique(shipped.all_walker).size >= 8
  pick = np.linspace(0, n - 1, 40).astype(int)
  np.testing.assert_allclose(np.asarray(system.energy(jnp.asarray(shipped.positions[pick]))),
                             shipped.energies[pick], atol=0.05, rtol=1e-4)
  top = load_topology(system.pdb_path)
  phi_idx, _ = backbone_dihedral_pairs(top)
  assert shipped.all_angles.shape[1:] == (phi_idx.shape[0], 2)
  assert shipped.all_angles.shape[0] >= 4 * n  # every frame's angles, coordinates for a subset
  # The stored angles of the frames with coordinates are theirs. Frames are matched by walker
  # and energy; in a set of tens of thousands of frames two of one walker can share a float32
  # energy, so a frame's angles must be those of one of the frames it matches.
  own = np.asarray(backbone_angles(shipped.positions[pick], top))
  for k, i in enumerate(pick):
    rows = np.flatnonzero((shipped.all_energies == shipped.energies[i])
                          & (shipped.all_walker == shipped.walker[i]))
    assert rows.size >= 1, f"frame {i}: no frame of walker {shipped.walker[i]} has its energy"
    diff = np.abs(np.angle(np.exp(1j * (shipped.all_angles[rows] - own[k]))))
    assert diff.max(axis=(1, 2)).min() < 1e-4, f"frame {i}: its angles are no matching frame's"
  centres = chiral_centres(top)
  signs = chirality_signs(jnp.asarray(system.positions.reshape(1, -1)), centres)[0]
  assert not np.any(np.asarray(wrong_chirality(jnp.asarray(shipped.positions), centres, signs)))
