"""Bring your own system, tried as a new user would: a capped dipeptide other than alanine from a
PDB file (tests/data/valdp.pdb, Amber14 + OBC2) and a 6-D energy of one's own
(tests/data/user_energy.py), trained from the CLI with a tiny budget, with every output;
`cmtjax sample`, `cmtjax evaluate`, `cmtjax reference`; and a one-line error with exit code 2
for each mistake a user can make at the boundary."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cmtjax.cli import main

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
VALDP = os.path.join(DATA, "valdp.pdb")
USER = os.path.join(DATA, "user_energy.py")

# Small enough to run in seconds; big enough that every code path runs.
TINY_MOLECULE = ["--budget", "4000", "--set", "cmt.n_samples=2000", "--set", "cmt.n_grad_steps=4",
                 "--set", "cmt.batch_size=256", "--set", "flow.n_layers=2",
                 "--set", "flow.hidden=[16]", "--set", "eval.n_samples=2000",
                 "--set", "eval.n_repeats=1", "--set", "eval.every=0",
                 "--set", "eval.n_saved_samples=300", "--set", "eval.chunk=2000", "--no-progress"]
TINY = ["--budget", "6000", "--set", "cmt.n_samples=2000", "--set", "cmt.n_grad_steps=10",
        "--set", "cmt.batch_size=256", "--set", "flow.n_layers=2", "--set", "flow.hidden=[16]",
        "--set", "eval.n_samples=2000", "--set", "eval.n_repeats=1", "--set", "eval.every=0",
        "--set", "eval.n_saved_samples=300", "--no-progress"]


def _error(capsys, argv) -> str:
  """Runs the CLI, expects exit code 2, returns its one-line error."""
  assert main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("cmtjax: error: ") and "\n" not in err, err
  assert "Traceback" not in err
  return err


@pytest.mark.slow
def test_a_capped_valine_dipeptide_from_its_pdb_with_amber14(tmp_path, capsys):
  out = tmp_path / "valdp"
  assert main(["train", "--target", VALDP, "--forcefield", "amber14-all.xml,implicit/obc2.xml",
               "--out", str(out), *TINY_MOLECULE]) == 0
  for name in ("config.json", "metrics.json", "steps.jsonl", "params.msgpack", "samples.npz",
               "samples.dcd", "samples.pdb", "ramachandran.png", "energies.png", "samples.png",
               "schedule.png"):
    assert (out / name).is_file(), name
  # Each step logs its sparse states: φ > 0 of the one residue, cis of both peptide bonds.
  first = json.loads((out / "steps.jsonl").read_text().splitlines()[0])
  assert len(first["phi_pos_weighted"]) == 1
  assert len(first["cis_buffer"]) == 2 and len(first["cis_weighted"]) == 2
  config = json.loads((out / "config.json").read_text())
  assert config["target"] == VALDP  # absolute: the folder can be resumed from anywhere
  assert config["target_kwargs"]["forcefield_files"] == ["amber14-all.xml", "implicit/obc2.xml"]
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["reference"] is None and "cmtjax reference --target" in metrics["reference_note"]
  assert metrics["chirality_error_rate"] == 0.0
  samples = np.load(out / "samples.npz")
  assert samples["positions"].shape == (300, 3 * 28)
  for key in ("log_q", "log_p", "log_w", "energies"):
    assert samples[key].shape == (300,), key
  np.testing.assert_allclose(samples["log_w"], samples["log_p"] - samples["log_q"])
  # log p̃ = -E / kT below the regularisation threshold (above it energies grow as a log).
  from cmtjax.targets.molecules.regularise import DEFAULT_ENERGY_LOG_THRESHOLD
  low = samples["energies"] < DEFAULT_ENERGY_LOG_THRESHOLD
  assert low.any()
  np.testing.assert_allclose(-samples["energies"][low] / float(samples["kbt"]),
                             samples["log_p"][low], rtol=1e-4, atol=1e-3)
  capsys.readouterr()

  # More samples from the finished run: npz plus a trajectory.
  more = tmp_path / "more"
  assert main(["sample", "--run", str(out), "-n", "50", "--out", str(more)]) == 0
  assert np.load(f"{more}.npz")["positions"].shape == (50, 84)
  import mdtraj  # pylint: disable=g-import-not-at-top
  assert mdtraj.load(f"{more}.dcd", top=f"{more}.pdb").n_frames == 50

  # A (tiny) replica-exchange reference, then the run evaluated against it.
  ref = tmp_path / "ref.npz"
  assert main(["reference", "--target", VALDP, "--forcefield",
               "amber14-all.xml,implicit/obc2.xml", "--out", str(ref), "--walkers", "2",
               "--n-replicas", "2", "--steps", "400", "--burn-in", "100", "--save-every", "50",
               "--swap-every", "50", "--frames-per-call", "4"]) == 0
  assert np.load(ref)["positions"].shape == (2 * 8, 84)
  assert main(["evaluate", "--run", str(out), "--reference", str(ref)]) == 0
  again = json.loads((out / "metrics.json").read_text())
  assert again["reference"] == str(ref)
  for key in ("ramachandran_tv", "eubo", "energy_w1", "forward_ess"):
    assert key in again, key
  for key in ("target_evals", "grad_steps", "target_reached_at_step", "seed"):
    assert again[key] == metrics[key], key
  assert again["reverse_ess"] == metrics["reverse_ess"]  # the run's own evaluation key


def test_a_python_energy_of_ones_own_from_the_cli(tmp_path, capsys):
  out = tmp_path / "wells"
  assert main(["train", "--target", f"{USER}:two_wells", "--set", "target_kwargs.separation=2.5",
               "--out", str(out), *TINY]) == 0
  for name in ("config.json", "metrics.json", "steps.jsonl", "params.msgpack", "samples.npz",
               "samples.png", "schedule.png"):
    assert (out / name).is_file(), name
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["target_evals"] == 6000 and metrics["log_z_error"] is not None
  assert np.load(out / "samples.npz")["positions"].shape == (300, 6)
  capsys.readouterr()
  # The module is found again from the saved config: resume and evaluate work.
  assert main(["train", "--resume", str(out), "--no-progress"]) == 0
  assert json.loads((out / "metrics.json").read_text())["reverse_ess"] == metrics["reverse_ess"]


def test_bad_input_at_the_boundary_is_one_line_and_exit_2(tmp_path, capsys):
  run = ["--out", str(tmp_path / "x"), *TINY]
  assert "unknown target 'nope'" in _error(capsys, ["train", "--target", "nope", *run])
  assert "PDB file not found" in _error(capsys, ["train", "--target", "missing.pdb", *run])
  bad_pdb = tmp_path / "xyz.pdb"
  bad_pdb.write_text(open(VALDP).read().replace("VAL A", "XYZ A"))
  assert "cannot parameterise it: No template found for residue 1 (XYZ)" in _error(
      capsys, ["train", "--target", str(bad_pdb), *run])
  assert "unsupported CustomGBForce" in _error(
      capsys, ["train", "--target", VALDP, "--forcefield", "amber14-all.xml,implicit/gbn2.xml",
               *run])
  assert "unknown keyword argument(s) 'pdb_path'" in _error(
      capsys, ["train", "--target", VALDP, "--set", "target_kwargs.pdb_path=x", *run])
  assert "No module named 'no_such_module'" in _error(
      capsys, ["train", "--target", "no_such_module:make", *run])
  assert "has no function 'nope'" in _error(capsys, ["train", "--target", f"{USER}:nope", *run])
  assert "([batch, 1]: drop the last axis)" in _error(
      capsys, ["train", "--target", f"{USER}:bad_shape", *run])
  err = _error(capsys, ["train", "--target", f"{USER}:all_nan", *run])
  assert "target 'all_nan': the target's log density was NaN or infinite for all 2000" in err
  assert "precision must be 'float32' or 'float64'" in _error(
      capsys, ["train", "--target", "aldp", "--set", "target_kwargs.precision=float16", *run])
  assert "unknown keyword argument(s) 'precision'" in _error(
      capsys, ["train", "--target", "gmm40", "--set", "target_kwargs.precision=float64", *run])
  assert "not a finished run folder" in _error(
      capsys, ["sample", "--run", str(tmp_path), "--out", str(tmp_path / "s")])
  assert "--reference" in _error(
      capsys, ["evaluate", "--run", str(tmp_path), "--reference", str(tmp_path / "no.npz")])


@pytest.mark.parametrize("as_module", [False, True])
def test_an_edited_target_file_changes_the_run_fingerprint(tmp_path, monkeypatch, as_module):
  """A target read from a file (``file.py:function``, or an importable
  ``package.module:function``) is fingerprinted by the file's content, so a checkpoint is not
  resumed against an edited energy; a built-in target carries no file hash."""
  from cmtjax.io.config import build_config
  from cmtjax.runner import fingerprinted_config, run_fingerprint

  package = tmp_path / "my_targets_for_fingerprint"
  package.mkdir()
  (package / "__init__.py").write_text("")
  source = package / "energy.py"
  source.write_text("def make():\n  return None\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  spec = ("my_targets_for_fingerprint.energy:make" if as_module else f"{source}:make")
  cfg = build_config([{"target": spec}])
  before, fp_before = fingerprinted_config(cfg), run_fingerprint(cfg)
  assert len(before["target_file_sha256"]) == 64
  source.write_text("def make():\n  return 1\n")
  assert fingerprinted_config(cfg)["target_file_sha256"] != before["target_file_sha256"]
  assert run_fingerprint(cfg) != fp_before
  assert "target_file_sha256" not in fingerprinted_config(build_config([{"target": "gmm40"}]))
  # A module that cannot be found gets no hash here (building the target reports it).
  missing = build_config([{"target": "no_such_module_anywhere:make"}])
  assert "target_file_sha256" not in fingerprinted_config(missing)
