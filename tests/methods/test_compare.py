"""The comparison runner's pure parts: method specs, mean ± s.e., the table."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "compare.py")
_spec = importlib.util.spec_from_file_location("cmtjax_compare", _PATH)
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def test_method_specs():
  assert compare.parse_spec("fab") == ("fab", {})
  name, layer = compare.parse_spec("cmt:path=geometric,eps_tr=0.2,flow.n_bins=16")
  assert name == "cmt"
  assert layer == {"cmt": {"path": "geometric", "eps_tr": 0.2}, "flow": {"n_bins": 16}}
  assert compare.run_label("cmt:schedule=linear_beta") == "cmt__schedule=linear_beta"
  with pytest.raises(ValueError, match="key=value"):
    compare.parse_spec("cmt:geometric")


def test_mean_and_standard_error_over_seeds():
  s = compare.mean_se([1.0, 2.0, 4.0, None, float("nan")])
  assert s["n"] == 3 and s["mean"] == pytest.approx(7 / 3)
  assert s["se"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                             + (4 - 7 / 3) ** 2) / 2) / math.sqrt(3))
  assert compare.mean_se([3.0]) == {"mean": 3.0, "se": 0.0, "n": 1}
  runs = [{"reverse_ess": 0.9, "log_z_error": -0.02, "modes_covered": 40, "n_modes": 40},
          {"reverse_ess": 0.8, "log_z_error": 0.04, "modes_covered": 38, "n_modes": 40},
          {"error": "RuntimeError: boom"}]
  s = compare.summarise(runs)
  assert s["n_runs"] == 2 and s["n_failed"] == 1 and s["n_modes"] == 40
  assert s["abs_log_z_error"]["mean"] == pytest.approx(0.03)
  assert s["log_z_error"]["mean"] == pytest.approx(0.01)
  table = compare.markdown_table("gmm40", {"cmt": s}, 2e6, [0, 1, 2])
  row = [line for line in table.splitlines() if line.startswith("| cmt")][0]
  assert "| 2 (1 failed) |" in row and "85 ± 5 |" in row and "39 ± 1 / 40" in row
  assert "EUBO" not in table  # columns no run reported are left out
  assert "Per backbone pair" not in table  # no per-pair figures: no per-pair table


def test_per_pair_ramachandran_table_of_a_peptide():
  run = lambda tv, tvw: {"reverse_ess": 0.1, "ramachandran_tv_36_per_pair": tv,
                         "ramachandran_tv_reweighted_36_per_pair": tvw,
                         "ramachandran_tv_36_floor_reference_per_pair": [0.06, 0.07, 0.065],
                         "ramachandran_tv_36_floor_model_per_pair": [0.04, 0.03, 0.035]}
  s = compare.summarise([run([0.1, 0.2, 0.3], [0.15, 0.25, 0.35]),
                         run([0.3, 0.4, 0.5], [0.15, 0.25, 0.35])])
  assert [p["mean"] for p in s["ramachandran_tv_36_per_pair"]] == pytest.approx([0.2, 0.3, 0.4])
  assert s["ramachandran_tv_36_per_pair"][0]["se"] == pytest.approx(0.1)
  other = compare.summarise([{"reverse_ess": 0.2}])  # a row without per-pair figures
  table = compare.markdown_table("ala4", {"cmt": s, "fab": other}, 1.1e7, [0, 1])
  lines = table.splitlines()
  header = [l for l in lines if l.startswith("| method | pair 1")]
  assert header and "pair 3" in header[0] and "pair 4" not in header[0]
  cmt = [l for l in lines if l.startswith("| cmt") and "pair" not in l and "/" in l]
  assert cmt and "| 0.2 ± 0.1 / 0.15 ± 0 (0.06 ± 0, 0.04 ± 0) |" in cmt[0]
  assert "| 0.4 ± 0.1 / 0.35 ± 0 (0.065 ± 0, 0.035 ± 0) |" in cmt[0]
  assert any(l.startswith("| fab | – | – | – |") for l in lines)


def test_ess_plot_of_several_seeds(tmp_path):
  from cmtjax.io.plots import plot_ess_vs_evals

  curve = lambda ess: [{"target_evals": 1000 * (i + 1), "reverse_ess": e}
                       for i, e in enumerate(ess)]
  path = str(tmp_path / "ess.png")
  plot_ess_vs_evals(path, {"cmt": [curve([0.1, 0.5, 0.9]), curve([0.2, 0.6])],
                          "fab": [curve([0.05, None, 0.3])], "none": [[]]}, "t")
  assert os.path.getsize(path) > 1000
  # A comparison of a particle sampler alone (no reverse ESS at any point) or of runs whose
  # ESS is 0 throughout: an empty or flat plot, not a log-scale error.
  smc = [{"target_evals": 1000 * (i + 1)} for i in range(3)]
  plot_ess_vs_evals(str(tmp_path / "smc.png"), {"smc": [smc, smc]}, "t")
  plot_ess_vs_evals(str(tmp_path / "zero.png"), {"tabg": [curve([0.0, 0.0])]}, "t")
  assert os.path.getsize(tmp_path / "smc.png") > 1000
  assert os.path.getsize(tmp_path / "zero.png") > 1000


def test_ess_curve_carries_the_training_time_of_its_steps(tmp_path):
  import json

  from cmtjax.io.plots import plot_ess_vs_evals

  with open(tmp_path / "evals.jsonl", "w") as f:
    for step, ess in ((1, 0.1), (3, 0.4)):
      f.write(json.dumps({"step": step, "target_evals": 100 * (step + 1),
                          "reverse_ess": ess}) + "\n")
  with open(tmp_path / "steps.jsonl", "w") as f:
    for step in range(4):
      f.write(json.dumps({"step": step, "timing": {"wall_seconds": 10.0 * (step + 1),
                                                   "step_seconds": 10.0}}) + "\n")
  run = {"folder": str(tmp_path), "target_evals": 600, "reverse_ess": 0.5,
         "training_seconds": 55.0}
  curve = compare._curve(run)
  assert [p["training_seconds"] for p in curve] == [20.0, 40.0, 55.0]
  assert [p["target_evals"] for p in curve] == [200, 400, 600]
  # An in-training evaluation at the last step: the curve ends at the final evaluation's
  # figure (the table's), with the step's time.
  with open(tmp_path / "evals.jsonl", "a") as f:
    f.write(json.dumps({"step": 5, "target_evals": 600, "reverse_ess": 0.3}) + "\n")
  with open(tmp_path / "steps.jsonl", "a") as f:
    for step in (4, 5):
      f.write(json.dumps({"step": step, "timing": {"wall_seconds": 10.0 * (step + 1)}}) + "\n")
  ended = compare._curve(run)
  assert [p["target_evals"] for p in ended] == [200, 400, 600]
  assert ended[-1]["reverse_ess"] == 0.5 and ended[-1]["training_seconds"] == 60.0
  # A merged run without its folder: its final point only, with its time.
  assert compare._curve({"target_evals": 600, "reverse_ess": 0.5,
                         "training_seconds": 55.0}) == [
      {"target_evals": 600, "reverse_ess": 0.5, "training_seconds": 55.0}]
  path = str(tmp_path / "ess_time.png")
  plot_ess_vs_evals(path, {"cmt": [curve, [dict(p, training_seconds=p["training_seconds"] + 5)
                                           for p in curve]]}, "t",
                    x_key="training_seconds", x_label="s")
  assert os.path.getsize(path) > 1000


@pytest.mark.slow
def test_parallel_runs_keep_the_fixed_schedule_after_its_cmt_run(tmp_path):
  """--jobs 2: runs in worker processes, a fixed schedule still takes cmt's step count."""
  import json
  import subprocess
  import sys

  res = tmp_path / "res"
  cmd = [sys.executable, _PATH, "--target", "double_well2d", "--methods", "cmt",
         "cmt:schedule=linear_beta", "--seeds", "0", "--budget", "2000", "--jobs", "2",
         "--no-progress", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(res),
         "--set", "cmt.n_samples=500", "--set", "cmt.n_grad_steps=3",
         "--set", "cmt.batch_size=128", "--set", "eval.n_samples=500",
         "--set", "eval.n_samples_during=200", "--set", "eval.every=2",
         "--set", "eval.n_repeats=1", "--set", "flow.n_layers=2", "--set", "flow.hidden=[16]"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(res / "compare_double_well2d.json") as f:
    results = json.load(f)
  (cmt_run,) = results["methods"]["cmt"]["runs"]
  (fixed_run,) = results["methods"]["cmt:schedule=linear_beta"]["runs"]
  assert "error" not in cmt_run and "error" not in fixed_run
  reached = cmt_run["target_reached_at_step"]
  expected = reached + 1 if reached is not None else cmt_run["n_steps"]
  assert fixed_run["schedule_steps"] == expected
  assert fixed_run["schedule_steps_from"].startswith("steps of the plain cmt run")
  assert cmt_run["target_evals"] == fixed_run["target_evals"] == 2000
  table = (res / "compare_double_well2d.md").read_text()
  assert "| cmt | 1 |" in table and "| cmt:schedule=linear_beta | 1 |" in table
  assert (res / "compare_double_well2d.png").stat().st_size > 1000


def test_report_only_tables_the_finished_runs(tmp_path):
  """--report-only runs nothing: finished runs make the table, missing ones are left out."""
  import json

  runs, res = tmp_path / "runs", tmp_path / "res"
  for seed, ess in ((0, 0.9), (1, 0.8)):
    folder = runs / "gmm40" / "cmt" / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(
        {"method": "cmt", "seed": seed, "reverse_ess": ess, "target_evals": 1000,
         "timing": {"total_seconds": 12.0}, "modes_covered": 40, "n_modes": 40}))
    (folder / "evals.jsonl").write_text(json.dumps({"target_evals": 500, "reverse_ess": 0.5})
                                        + "\n")
  assert compare.main(["--target", "gmm40", "--methods", "cmt", "reverse_kl", "--seeds", "0",
                       "1", "2", "--budget", "1e6", "--runs-dir", str(runs), "--results-dir",
                       str(res), "--report-only", "--jobs", "2"]) == 0
  assert not (runs / "gmm40" / "reverse_kl").exists()  # nothing was run
  results = json.loads((res / "compare_gmm40.json").read_text())
  cmt = results["methods"]["cmt"]
  assert [r["seed"] for r in cmt["runs"]] == [0, 1]
  assert all(r["reused"] and r["seconds"] == 12.0 for r in cmt["runs"])
  assert cmt["summary"]["reverse_ess"]["mean"] == pytest.approx(0.85)
  assert results["methods"]["reverse_kl"]["runs"] == []
  table = (res / "compare_gmm40.md").read_text()
  assert "| cmt | 2 |" in table and "| reverse_kl |" not in table
  assert (res / "compare_gmm40.png").stat().st_size > 1000


def test_merge_adds_the_rows_of_an_earlier_comparison(tmp_path):
  """--merge: an earlier table's methods join this one's (same target and budget only); a
  method run now keeps its own rows, and the table says where merged rows came from."""
  import json

  runs, res, old = tmp_path / "runs", tmp_path / "res", tmp_path / "old.json"
  folder = runs / "gmm40" / "smc" / "seed0"
  folder.mkdir(parents=True)
  (folder / "metrics.json").write_text(json.dumps(
      {"method": "smc", "seed": 0, "particle_ess": 0.97, "smc_ess_at_target": 0.42,
       "log_z": 0.01, "target_evals": 990,
       "timing": {"total_seconds": 5.0}}))
  earlier = {"target": "gmm40", "budget": 1000, "command": "compare.py earlier",
             "methods": {"cmt": {"spec": "cmt", "runs": [
                 {"method": "cmt", "seed": 0, "reverse_ess": 0.9, "target_evals": 1000}]},
                 "smc": {"spec": "smc", "runs": [{"method": "smc", "seed": 0,
                                                  "particle_ess": 0.1}]},
                 "fab": {"spec": "fab", "runs": []}}}  # a row the earlier table never filled
  old.write_text(json.dumps(earlier))
  argv = ["--target", "gmm40", "--methods", "smc", "--seeds", "0", "--budget", "1e3",
          "--runs-dir", str(runs), "--results-dir", str(res), "--report-only",
          "--set", "smc.n_particles=10"]
  assert compare.main(argv + ["--merge", str(old)]) == 0
  results = json.loads((res / "compare_gmm40.json").read_text())
  assert results["methods"]["cmt"]["runs"][0]["merged_from"] == str(old)
  assert results["methods"]["smc"]["runs"][0]["particle_ess"] == 0.97  # run now: its own
  assert "fab" not in results["methods"]  # an empty row is not merged
  table = (res / "compare_gmm40.md").read_text()
  assert "| cmt | 1 |" in table and "particle ESS %" in table and "merged from" in table
  smc_row = next(l for l in table.splitlines() if l.startswith("| smc |"))
  assert "| 97 |" in smc_row and "| 42 |" in smc_row  # final weights; weights on arriving
  earlier["budget"] = 2000
  old.write_text(json.dumps(earlier))
  with pytest.raises(SystemExit, match="not of 'gmm40' at 1000"):
    compare.main(argv + ["--merge", str(old)])


def test_resume_continues_an_interrupted_run_from_its_checkpoint(tmp_path):
  """--resume: a run stopped after some steps (checkpoints, no metrics.json) continues from its
  newest checkpoint and ends as the uninterrupted run did; a finished run is read back."""
  import json
  import shutil

  runs, res = tmp_path / "runs", tmp_path / "res"
  argv = ["--target", "double_well2d", "--methods", "cmt", "--seeds", "0", "--budget", "3000",
          "--runs-dir", str(runs), "--results-dir", str(res), "--no-progress", "--resume",
          "--eval-points", "0", "--set", "cmt.n_samples=500", "--set", "cmt.n_grad_steps=3",
          "--set", "cmt.batch_size=128", "--set", "eval.n_samples=500", "--set",
          "eval.every=0", "--set", "eval.n_repeats=1", "--set", "flow.n_layers=2",
          "--set", "flow.hidden=[16]", "--set", "checkpoint.every=1", "--set",
          "checkpoint.keep=10"]
  assert compare.main(argv) == 0
  folder = runs / "double_well2d" / "cmt" / "seed0"
  whole = json.loads((folder / "metrics.json").read_text())
  assert whole["n_steps"] == 6 and whole["resumed_from"] is None
  # Stop it after step 2: what a run killed at that point leaves.
  (folder / "metrics.json").unlink()
  for name in os.listdir(folder / "checkpoints"):
    if name.isdigit() and int(name) > 2:
      shutil.rmtree(folder / "checkpoints" / name)
  grid = _grid()
  assert grid.has_checkpoint(str(folder)) and not grid.has_metrics(str(folder))
  assert compare.main(argv) == 0
  again = json.loads((folder / "metrics.json").read_text())
  assert os.path.basename(again["resumed_from"]) == "2"
  for key in ("n_steps", "target_evals", "grad_steps", "reverse_ess", "log_z"):
    assert again[key] == whole[key], key
  row = json.loads((res / "compare_double_well2d.json").read_text())["methods"]["cmt"]["runs"][0]
  assert row["continued_from_checkpoint"] and row["seconds"] > 0 and "reused" not in row
  assert compare.main(argv) == 0  # now finished: read back, not run again
  row = json.loads((res / "compare_double_well2d.json").read_text())["methods"]["cmt"]["runs"][0]
  assert row["reused"] and "continued_from_checkpoint" not in row
  assert not grid.has_checkpoint(str(folder))  # a finished run is not an interrupted one


def _grid():
  import sys

  sys.path.insert(0, os.path.dirname(_PATH))
  import grid

  return grid


def test_grid_runs_waits_and_reuses_in_order(tmp_path):
  """run_grid: a run starts only after the run it waits for was handled; reused runs are read
  back (an unreadable one becomes an error entry); waits on runs outside the grid are dropped."""
  import json

  from cmtjax.io.config import build_config

  grid = _grid()
  cfg = build_config([{"target": "double_well2d", "method": "cmt"}])
  for name, text in (("a", '{"n_steps": 4, "target_reached_at_step": 2}'),
                     ("b", '{"n_steps": 7}'), ("c", "{not json")):
    (tmp_path / name).mkdir()
    (tmp_path / name / "metrics.json").write_text(text)
  seen, handled = [], []

  def prepare(key):
    seen.append((key, list(handled)))
    return grid.Job(cfg, str(tmp_path / key), reuse=True)

  order = []
  for done in grid.run_grid(["b", "c", "a"], prepare, after={"b": "a", "c": "zz"}):
    assert done.reused and done.cpu_seconds is None and done.wall_seconds >= 0
    handled.append(done.key)
    order.append((done.key, done.metrics))
  assert [k for k, _ in order] == ["c", "a", "b"]
  assert dict(seen)["b"] == ["c", "a"]  # b was prepared after a was handled
  assert order[0][1]["error"].startswith("JSONDecodeError") and order[0][1]["seed"] == 0
  assert grid.anneal_steps(order[1][1]) == 3 and grid.anneal_steps(order[2][1]) == 7
  with pytest.raises(ValueError, match="wait for each other"):
    list(grid.run_grid(["a", "b"], prepare, after={"a": "b", "b": "a"}))
  # finished_with: same config (keys added later not compared) and readable metrics
  (tmp_path / "a" / "config.json").write_text(json.dumps({"target": "double_well2d",
                                                           "method": "cmt"}))
  assert grid.finished_with(str(tmp_path / "a"), cfg)
  assert not grid.finished_with(str(tmp_path / "a"), build_config([{"target": "gmm40"}]))
  (tmp_path / "c" / "config.json").write_text("{}")
  assert not grid.finished_with(str(tmp_path / "c"), cfg)  # metrics.json unreadable


def test_grid_summaries_and_tables():
  grid = _grid()
  runs = [{"log_z_error": -0.5, "mode_tv": 0.1, "timing": {"total_seconds": 3.0}},
          {"log_z_error": 0.25, "mode_tv": float("nan")}, {"error": "x", "mode_tv": 9.0}]
  s = grid.summarise(runs, ["abs_log_z_error", "mode_tv", "eubo"])
  assert s["abs_log_z_error"]["mean"] == pytest.approx(0.375) and "eubo" not in s
  assert s["mode_tv"] == {"mean": 0.1, "se": 0.0, "n": 1}  # nan and the failed run left out
  kept = grid.summarise(runs, ["mode_tv"], keep_nan=True)["mode_tv"]
  assert kept["n"] == 2 and grid.format_mean_se(kept) == "nan ± nan"
  assert grid.format_mean_se({"mean": 0.5, "se": 0.25, "n": 2}, ".3g", scale=100) == "50 ± 25"
  assert grid.format_mean_se(s["mode_tv"], ".2f") == "0.10"
  assert grid.format_mean_se(None) == "–"
  assert grid.flat_metrics(runs[0]) == {"log_z_error": -0.5, "mode_tv": 0.1,
                                        "total_seconds": 3.0}
  assert grid.md_table(["a", "b"], [[1, None]]) == ["| a | b |", "|---|---|", "| 1 | None |"]
  assert grid.merge({"cmt": {"path": "x", "eps": 1}}, {"cmt": {"path": "y"}}) == {
      "cmt": {"path": "y", "eps": 1}}
  v = grid.Variant("cmt:path=geometric", ({"cmt": {"path": "geometric"}}, {"method": "cmt"}))
  assert v.label == "cmt__path=geometric"
  cfg = v.config("double_well2d", {"target": "double_well2d", "seed": 3})
  assert cfg.method == "cmt" and cfg.method_config.path == "geometric" and cfg.seed == 3


@pytest.mark.slow
def test_ablation_tiny_grid_and_skip_done(tmp_path):
  """ablation.py: fixed_geometric takes its steps from the cmt run; --skip-done reuses both."""
  import json

  path = os.path.join(os.path.dirname(_PATH), "ablation.py")
  spec = importlib.util.spec_from_file_location("cmtjax_ablation", path)
  ablation = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ablation)
  argv = ["--dims", "2", "--seeds", "0", "--variants", "cmt", "fixed_geometric", "--budget",
          "2000", "--no-plots", "--name", "tiny", "--out", str(tmp_path / "res"),
          "--runs", str(tmp_path / "runs"), "--set", "cmt.n_samples=500",
          "--set", "cmt.n_samples_annealing=500",
          "--set", "cmt.n_grad_steps=3", "--set", "cmt.batch_size=128",
          "--set", "eval.n_samples=500", "--set", "eval.every=0", "--set", "eval.n_repeats=1",
          "--set", "checkpoint.enabled=false", "--set", "flow.n_layers=2",
          "--set", "flow.hidden=[16]", "--skip-done"]
  ablation.main(argv)
  rows = json.loads((tmp_path / "res" / "tiny.json").read_text())
  assert [r["variant"] for r in rows] == ["cmt", "fixed_geometric"]
  cmt, fixed = rows
  reached = cmt["target_reached_at_step"]
  assert fixed["schedule_steps"] == (reached + 1 if reached is not None else cmt["n_steps"])
  stored = json.loads((tmp_path / "runs" / "tiny" / "d2_s0_cmt" / "metrics.json").read_text())
  assert stored["cpu_seconds"] > 0 and stored["total_seconds"] > 0
  assert stored["timing"]["total_seconds"] > 0
  table = (tmp_path / "res" / "tiny.md").read_text()
  assert "| 2 | cmt |" in table and "| 2 | fixed_geometric |" in table
  mtime = os.path.getmtime(tmp_path / "runs" / "tiny" / "d2_s0_fixed_geometric" / "steps.jsonl")
  ablation.main(argv)  # everything reused: no run touches its folder
  assert os.path.getmtime(tmp_path / "runs" / "tiny" / "d2_s0_fixed_geometric"
                          / "steps.jsonl") == mtime
  assert json.loads((tmp_path / "res" / "tiny.json").read_text()) == rows
