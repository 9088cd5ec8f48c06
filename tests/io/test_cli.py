"""The cmtjax command: outputs of a run, repeatability from config.json, one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from cmtjax.cli import main

TINY = ["--set", "cmt.n_samples=1000", "--set", "cmt.n_grad_steps=10", "--set",
        "cmt.batch_size=128", "--set", 'flow.hidden=[16]', "--set", "flow.n_layers=2",
        "--set", "eval.n_samples=2000", "--set", "eval.n_repeats=2", "--set", "eval.every=2",
        "--set", "eval.n_samples_during=1000", "--budget", "4000", "--no-progress"]


@pytest.mark.slow
def test_train_writes_every_output_and_repeats_from_its_config(tmp_path, capsys):
  out = tmp_path / "run"
  assert main(["train", "--target", "double_well2d", "--method", "cmt", "--seed", "1",
               "--out", str(out), *TINY]) == 0
  for name in ("config.json", "metrics.json", "steps.jsonl", "evals.jsonl", "params.msgpack",
               "samples.png", "schedule.png", "ess.png"):
    assert (out / name).is_file(), name
  printed = capsys.readouterr().out.splitlines()
  summary = [line for line in printed if line.startswith("cmt on double_well2d (seed 1): ")]
  assert summary and "modes, reverse ESS " in summary[0] and "log Z error " in summary[0]
  assert printed[-1].startswith(f"results in {out}: metrics.json, steps.jsonl")
  assert "samples.png" in printed[-1] and "schedule.png" in printed[-1]
  metrics = json.loads((out / "metrics.json").read_text())
  assert isinstance(metrics["warnings"], list)
  assert [f"WARNING: {w}" for w in metrics["warnings"]] == [
      line for line in printed if line.startswith("WARNING: ")]
  for key in ("target", "method", "seed", "reverse_ess", "reverse_ess_clipped", "log_z",
              "log_z_se", "target_evals", "grad_steps", "timing", "modes_covered",
              "n_modes", "mode_tv"):
    assert key in metrics, key
  assert metrics["target_evals"] == 4000 and metrics["grad_steps"] == 40
  # this process's own cost, recorded by the run (the test process: a lower bound of it)
  assert metrics["timing"]["process_cpu_seconds"] > 0
  assert 0.05 < metrics["timing"]["process_peak_rss_gb"] < 64
  steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
  assert len(steps) == 4
  for key in ("step", "lambda", "eta", "alpha", "beta", "kl", "entropy_drop", "step_ess",
              "target_evals"):
    assert key in steps[0], key
  # The saved config alone repeats the run exactly (same seed, same numbers).
  out2 = tmp_path / "again"
  assert main(["train", "--config", str(out / "config.json"), "--out", str(out2),
               "--no-progress"]) == 0
  m2 = json.loads((out2 / "metrics.json").read_text())
  assert m2["reverse_ess"] == metrics["reverse_ess"] and m2["log_z"] == metrics["log_z"]


def test_process_usage_is_the_runs_own_in_a_process_that_runs_several():
  """CPU seconds since the run's start, and (on Linux) a peak memory started afresh."""
  import numpy as np

  from cmtjax.runner import process_usage
  start = process_usage(reset_peak=True)
  big = np.ones((4000, 4000))  # 128 MB, touched
  during = process_usage(since=start)
  total = process_usage()
  assert 0.0 <= during["process_cpu_seconds"] <= (total["process_cpu_seconds"]
                                                  - start["process_cpu_seconds"] + 1e-9)
  assert during["process_cpu_seconds"] < total["process_cpu_seconds"]
  assert during["process_peak_rss_gb"] >= start["process_peak_rss_gb"] + 0.1
  del big
  if os.path.exists("/proc/self/clear_refs"):
    after = process_usage(reset_peak=True)
    assert after["process_peak_rss_gb"] < during["process_peak_rss_gb"] - 0.1


class _Clock:
  """A stand-in for the training loop's ``time`` module: 25 s for a sitting's first step,
  20 s for each later one (the loop reads the clock before and after each step)."""

  def __init__(self):
    self.now, self.calls = 0.0, 0

  def perf_counter(self):
    self.calls += 1
    if self.calls % 2 == 0:
      self.now += 25.0 if self.calls == 2 else 20.0
    return self.now


def test_minutes_end_a_run_with_its_outputs_and_a_warning_and_resume_goes_on(
    tmp_path, capsys, monkeypatch):
  """--minutes: the run ends after the last step that fits (a stand-in clock: 25 s for the
  first step, 20 s for each later one), writes every output and says why it ended; --resume
  with more minutes finishes the budget."""
  import importlib
  loop = importlib.import_module("cmtjax.train.loop")
  out = tmp_path / "run"
  monkeypatch.setattr(loop, "time", _Clock())
  assert main(["train", "--target", "double_well2d", "--out", str(out), "--minutes", "1",
               *TINY]) == 0  # 25 + 20 s; a third step would end at 65 s > 60 s
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["target_evals"] == 2000 and metrics["stopped_at_time_limit"]
  assert metrics["max_target_evals"] == 4000 and metrics["max_training_minutes"] == 1.0
  assert (out / "params.msgpack").is_file() and (out / "schedule.png").is_file()
  (warning,) = [w for w in metrics["warnings"] if "stopped at its time limit" in w]
  assert "(1 min) after 2,000 of the budget's 4,000" in warning and "--minutes" in warning
  assert f"WARNING: {warning}" in capsys.readouterr().out
  assert not [w for w in metrics["warnings"] if "raise max_target_evals" in w]
  assert json.loads((out / "config.json").read_text())["checkpoint"][
      "max_training_minutes"] == 1.0
  # Resumed with more time: the new limit is the run's (config.json), the budget finishes.
  monkeypatch.setattr(loop, "time", _Clock())
  assert main(["train", "--resume", str(out), "--minutes", "2", "--no-progress"]) == 0
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["target_evals"] == 4000 and not metrics["stopped_at_time_limit"]
  assert not [w for w in metrics["warnings"] if "time limit" in w]
  assert len((out / "steps.jsonl").read_text().splitlines()) == 4
  assert json.loads((out / "config.json").read_text())["checkpoint"][
      "max_training_minutes"] == 2.0


def test_plan_minutes_plans_the_budget_to_the_limit(tmp_path, monkeypatch):
  """--plan-minutes: with a stand-in clock (25 s for the first step, 20 s for each later one)
  and 1 minute, 98 % of the 15 s left after two steps fit 735 more evaluations: the run plans
  for 2,735 of its 4,000, takes the 2 steps that fit and ends without hitting the limit."""
  import importlib
  loop = importlib.import_module("cmtjax.train.loop")
  out = tmp_path / "run"
  monkeypatch.setattr(loop, "time", _Clock())
  assert main(["train", "--target", "double_well2d", "--out", str(out), "--plan-minutes", "1",
               *TINY]) == 0
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["planned_target_evals"] == 2735 and metrics["max_target_evals"] == 4000
  assert metrics["target_evals"] == 2000 and not metrics["stopped_at_time_limit"]
  assert not [w for w in metrics["warnings"] if "stopped at its time limit" in w]
  assert json.loads((out / "config.json").read_text())["checkpoint"]["plan_to_time_limit"]


def test_reverse_kl_from_the_cli(tmp_path):
  out = tmp_path / "rkl"
  assert main(["train", "--target", "double_well2d", "--method", "reverse_kl", "--out", str(out),
               "--set", "reverse_kl.batch_size=64", "--set", "reverse_kl.n_grad_steps=5",
               *TINY]) == 0
  assert (out / "training.png").is_file()
  assert json.loads((out / "metrics.json").read_text())["target_evals"] == 3840


@pytest.mark.parametrize("args,match", [
    (["--target", "nope"], "unknown target 'nope'"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--set", "cmt.eps_trr=1"], "unknown config key 'cmt.eps_trr'"),
    (["--config", "/nonexistent/c.json"], "config file not found"),
    (["--budget", "10"], "budget too small"),
    (["--minutes", "0"], "--minutes must be a number of minutes > 0"),
    (["--set", "checkpoint.max_training_minutes=-5"], "checkpoint.max_training_minutes"),
    (["--plan-minutes", "-1"], "--plan-minutes must be a number of minutes > 0"),
    (["--minutes", "5", "--plan-minutes", "5"], "not both"),
    (["--set", "checkpoint.plan_to_time_limit=true"], "needs checkpoint.max_training_minutes"),
    (["--method", "reverse_kl", "--plan-minutes", "5"], "'reverse_kl' cannot plan its budget"),
])
def test_bad_input_is_a_one_line_error_with_exit_code_2(tmp_path, capsys, args, match):
  code = main(["train", "--out", str(tmp_path / "x"), "--no-progress", *args])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert err.startswith("cmtjax: error:") and match in err and "\n" not in err


def test_unwritable_output_folder(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  code = main(["train", "--target", "double_well2d", "--out", str(blocker / "sub"),
               "--no-progress", *TINY])
  err = capsys.readouterr().err
  assert code == 2 and "not writable" in err


def test_console_script_entry_point(tmp_path):
  """`python -m cmtjax.cli` (what the `cmtjax` script runs) exits 2 on bad input."""
  r = subprocess.run([sys.executable, "-m", "cmtjax.cli", "train", "--target", "nope", "--out",
                      str(tmp_path)], capture_output=True, text=True,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 2 and "unknown target" in r.stderr


def test_init_from_starts_the_flow_from_an_earlier_run(tmp_path, capsys):
  """--init-from loads an earlier run's parameters as the starting flow (a learning rate of
  1e-12 leaves them where they were); another flow's parameters are a one-line error."""
  import numpy as np
  from flax import serialization

  from cmtjax.io.config import build_config, load_file
  from cmtjax.runner import fingerprinted_config
  first = tmp_path / "first"
  assert main(["train", "--target", "double_well2d", "--out", str(first), *TINY]) == 0
  second = tmp_path / "second"
  assert main(["train", "--target", "double_well2d", "--out", str(second), "--init-from",
               str(first), "--seed", "7", "--set", "cmt.learning_rate=1e-12", "--set",
               "cmt.final_learning_rate=1e-12", *TINY]) == 0
  def leaves(run):
    data = serialization.msgpack_restore((run / "params.msgpack").read_bytes())
    return [np.asarray(v) for v in __import__("jax").tree.leaves(data)]
  a, b = leaves(first), leaves(second)
  assert len(a) == len(b) and all(np.allclose(u, v, atol=1e-8) for u, v in zip(a, b))
  # The starting parameters are part of what the run computes: in its fingerprint.
  cfg = build_config([load_file(str(second / "config.json"))])
  assert cfg.init_params == str(first)
  assert "init_params_sha256" in fingerprinted_config(cfg)
  capsys.readouterr()
  code = main(["train", "--target", "double_well2d", "--out", str(tmp_path / "bad"),
               "--init-from", str(first), *TINY, "--set", "flow.hidden=[8]"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and "does not fit the flow of this run's config" in err, err
  code = main(["train", "--target", "double_well2d", "--out", str(tmp_path / "bad2"),
               "--init-from", str(tmp_path / "nothing"), *TINY])
  assert code == 2 and "--init-from" in capsys.readouterr().err


@pytest.mark.slow
def test_branch_from_goes_on_from_a_middle_checkpoint_with_changed_settings(tmp_path, capsys):
  """--branch-from DIR@K continues the state after step K of DIR in a new folder: unchanged
  settings repeat the original's later steps and figures exactly; changed ones are recorded
  (config.json, metrics.json's branched_from). Bad branches are one-line errors."""
  first = tmp_path / "first"
  assert main(["train", "--target", "double_well2d", "--out", str(first), *TINY,
               "--set", "checkpoint.keep=10"]) == 0
  same = tmp_path / "same"
  assert main(["train", "--branch-from", f"{first}@2", "--out", str(same),
               "--no-progress"]) == 0
  def steps(run):  # the records without their wall-clock figures
    return [{k: v for k, v in json.loads(s).items() if k != "timing"}
            for s in (run / "steps.jsonl").read_text().splitlines()]
  assert steps(same) == steps(first) and len(steps(first)) == 4
  m0, m1 = (json.loads((d / "metrics.json").read_text()) for d in (first, same))
  assert m1["reverse_ess"] == m0["reverse_ess"] and m1["target_evals"] == m0["target_evals"]
  assert m1["branched_from"] == {"run": str(first), "changed": "", "steps": 2}
  # A branch resumed (here after it finished: nothing left to do) is still a branch.
  assert main(["train", "--resume", str(same), "--no-progress"]) == 0
  again = json.loads((same / "metrics.json").read_text())
  assert again["branched_from"] == m1["branched_from"] and again["resumed_from"]
  other = tmp_path / "other"
  assert main(["train", "--branch-from", f"{first}@2", "--out", str(other), "--no-progress",
               "--set", "cmt.fit_weight_cap=3", "--set", "cmt.learning_rate=0.01"]) == 0
  m2 = json.loads((other / "metrics.json").read_text())
  assert "cmt.fit_weight_cap: '(unset)' vs 3.0" in m2["branched_from"]["changed"]
  assert "cmt.learning_rate: 0.001 vs 0.01" in m2["branched_from"]["changed"]
  assert json.loads((other / "config.json").read_text())["cmt"]["fit_weight_cap"] == 3.0
  lines, first_lines = steps(other), steps(first)
  assert lines[:2] == first_lines[:2] and lines[2]["loss"] != first_lines[2]["loss"]
  capsys.readouterr()
  for args, match in (
      ([f"{first}@99", "--out", str(tmp_path / "b1")], "no checkpoint after 99 steps"),
      ([str(first), "--out", str(first)], "--out must be a new folder"),
      ([str(first), "--out", str(tmp_path / "b2"), "--seed", "3"], "drop --seed"),
      ([str(first)], "--branch-from needs --out"),
      ([f"{first}@x", "--out", str(tmp_path / "b3")], "STEPS after '@'"),
      ([str(first), "--out", str(tmp_path / "b4"), "--set", "flow.n_layers=4"],
       "does not match this run's state layout"),
  ):
    assert main(["train", "--branch-from", *args, "--no-progress"]) == 2, args
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err, (match, err)


@pytest.mark.parametrize("name", ["aldp", "ala4", "ala6", "elil"])
def test_paper_configs_plan_their_own_budget_not_the_cpu_presets(name, capsys):
  """``--config <name>_paper.toml`` layers the target's CPU preset under the file; the file
  must name the budget plan itself, or it inherits an annealing share sized for a 1e5 buffer
  (a handful of paper-scale steps)."""
  path = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "molecules",
                      "configs", f"{name}_paper.toml")
  assert main(["train", "--config", path, "--dry-run"]) == 0
  cfg = json.loads(capsys.readouterr().out)
  cmt, budget = cfg["cmt"], cfg["max_target_evals"]
  assert cmt["n_samples"] >= 500_000 and cmt["n_grad_steps"] == 2000
  assert cmt["plan_budget"] and cmt["plan_anneal_evals"] == pytest.approx(0.8 * budget)
  # at least 100 annealing steps of the paper's buffer fit in the plan
  assert cmt["plan_anneal_evals"] / cmt["n_samples"] >= 100
  assert cmt["fit_weight_cap"] == 0.0
  assert cfg["flow"]["n_layers"] == 8 and cfg["flow"]["hidden"] == [256] * 5


def test_config_for_is_the_config_the_command_line_builds(capsys):
  """``cmtjax.cli.config_for`` (what benchmarks/gpu_step.py times) resolves the layers as
  ``cmtjax train ... --dry-run`` does, and refuses a resume, whose config is the run's own."""
  from cmtjax.cli import config_for
  from cmtjax.io.config import ConfigError, to_dict
  path = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "molecules",
                      "configs", "ala4_paper.toml")
  for argv in (["--config", path, "--set", "cmt.n_samples=1000", "--budget", "3e6"],
               ["--target", "aldp", "--seed", "2", "--set", "flow.n_layers=4",
                "--plan-minutes", "30"]):
    assert main(["train", *argv, "--dry-run"]) == 0
    assert to_dict(config_for(argv)) == json.loads(capsys.readouterr().out), argv
  cfg = config_for(["--config", path])
  assert cfg.method_config.n_grad_steps == 2000 and cfg.target == "ala4"
  with pytest.raises(ConfigError, match="resume"):
    config_for(["--resume", "runs/x"])


def test_a_saved_config_from_before_a_setting_existed_repeats_without_it(tmp_path, capsys):
  """A run's config.json saved before ``cmt.fit_weight_cap`` existed ran without a cap; repeated
  with --config under the aldp preset (which now caps at 100) it must still have none, while a
  partial config file written by hand takes the preset's value."""
  assert main(["train", "--target", "aldp", "--dry-run"]) == 0
  saved = json.loads(capsys.readouterr().out)
  assert saved["cmt"]["fit_weight_cap"] == 100.0  # the preset's
  del saved["cmt"]["fit_weight_cap"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert main(["train", "--config", str(tmp_path / "config.json"), "--dry-run"]) == 0
  assert json.loads(capsys.readouterr().out)["cmt"]["fit_weight_cap"] == 0.0
  (tmp_path / "partial.json").write_text(json.dumps({"target": "aldp", "seed": 3}))
  assert main(["train", "--config", str(tmp_path / "partial.json"), "--dry-run"]) == 0
  assert json.loads(capsys.readouterr().out)["cmt"]["fit_weight_cap"] == 100.0


def test_a_forward_kl_config_from_before_early_stopping_repeats_without_it(tmp_path, capsys):
  """forward_kl.early_stopping is on by default now; a run saved before it existed trained
  without it and repeats (and resumes: same fingerprint, same state) without it."""
  from cmtjax.io.config import build_config, with_settings_added_later
  from cmtjax.runner import fingerprinted_config
  assert main(["train", "--target", "aldp", "--method", "forward_kl", "--dry-run"]) == 0
  saved = json.loads(capsys.readouterr().out)
  assert saved["forward_kl"]["early_stopping"] is True
  old = json.loads(json.dumps(saved))
  del old["forward_kl"]["early_stopping"], old["forward_kl"]["validation_frames"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert main(["train", "--config", str(tmp_path / "config.json"), "--dry-run"]) == 0
  repeated = json.loads(capsys.readouterr().out)
  assert repeated["forward_kl"]["early_stopping"] is False
  # Hashed as the older version hashed it (without the two settings), so its checkpoints
  # resume; a run with early stopping hashes the setting.
  fp = fingerprinted_config(build_config([with_settings_added_later(old)]))["forward_kl"]
  assert "early_stopping" not in fp and "validation_frames" not in fp
  assert fp == old["forward_kl"]
  assert fingerprinted_config(build_config([saved]))["forward_kl"]["early_stopping"] is True

