"""Checkpoints and resume: bitwise resume after SIGKILL, corrupted and incompatible checkpoints."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pytest

from cmtjax.cli import main
from cmtjax.flows import FlowConfig, make_flow
from cmtjax.methods import CMTConfig, make_cmt
from cmtjax.targets import make_target
from cmtjax.train import (CheckpointError, CheckpointOptions, IncompatibleCheckpointError,
                          train)

TIMING = ("timing", "resumed_from")
RUN = ["train", "--target", "double_well2d", "--seed", "3", "--set", "cmt.n_samples=512",
       "--set", "cmt.n_grad_steps=10", "--set", "cmt.batch_size=128", "--set", "flow.hidden=[16]",
       "--set", "flow.n_layers=2", "--set", "eval.n_samples=1000", "--set", "eval.n_repeats=1",
       "--set", "eval.every=10", "--set", "eval.n_samples_during=500", "--budget", "15360",
       "--no-progress"]  # 30 annealing steps


def _cli(*args):
  return [sys.executable, "-m", "cmtjax.cli", *args]


def _jsonl(path):
  with open(path) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_bitwise(tmp_path):
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  # The uninterrupted reference runs alongside the run that gets killed. Their output goes to
  # files: a pipe nobody reads while they run blocks a process once it holds 64 kB (XLA logs a
  # few kB for each program loaded from the compilation cache).
  ref_log = open(tmp_path / "ref.log", "w+")
  ref_proc = subprocess.Popen(_cli(*RUN, "--out", str(ref)), env=env, stdout=ref_log,
                              stderr=subprocess.STDOUT, text=True)
  proc = subprocess.Popen(_cli(*RUN, "--out", str(killed)), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt6 = killed / "checkpoints" / "6"
  deadline = time.time() + 500
  while not ckpt6.is_dir() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not (killed / "metrics.json").exists()  # it really was killed mid-run
  n_lines = len((killed / "steps.jsonl").read_text().splitlines())
  assert 6 <= n_lines < 30

  resumed = subprocess.run(_cli("train", "--resume", str(killed), "--no-progress"), env=env,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  ref_proc.wait(timeout=600)
  ref_log.seek(0)
  assert ref_proc.returncode == 0, ref_log.read()[-2000:]
  ref_log.close()

  # Bitwise: the same parameters, the same step records (no duplicate lines), the same
  # evaluations and final metrics (timings aside).
  assert (killed / "params.msgpack").read_bytes() == (ref / "params.msgpack").read_bytes()
  steps_ref, steps_res = _jsonl(ref / "steps.jsonl"), _jsonl(killed / "steps.jsonl")
  assert len(steps_ref) == 30 and [r["step"] for r in steps_res] == list(range(30))
  assert steps_res == steps_ref
  assert _jsonl(killed / "evals.jsonl") == _jsonl(ref / "evals.jsonl")
  m_ref = {k: v for k, v in json.loads((ref / "metrics.json").read_text()).items()
           if k not in TIMING}
  m_res = json.loads((killed / "metrics.json").read_text())
  assert m_res["resumed_from"].endswith(os.path.join("checkpoints", str(m_res_step(m_res))))
  assert {k: v for k, v in m_res.items() if k not in TIMING} == m_ref
  # Only the newest `keep` (3) checkpoints remain.
  assert sorted(os.listdir(killed / "checkpoints"), key=str) == ["28", "29", "30",
                                                                  "history.jsonl"]


def m_res_step(metrics):
  return int(os.path.basename(metrics["resumed_from"]))


# ---- in-process tests on a small CMT run ---------------------------------------------------

@pytest.fixture(scope="module")
def small():
  target = make_target("double_well2d")
  flow = make_flow(FlowConfig(dim=2, coupling="spline", n_layers=2, hidden=(8,), n_bins=4,
                              base_scale=2.0, box=4.0))
  cfg = CMTConfig(n_samples=256, n_grad_steps=5, batch_size=64)
  method = make_cmt(cfg, flow, target, n_steps=6)
  params = flow.init(jax.random.PRNGKey(1))
  ref = train(method, jax.random.PRNGKey(0), params, progress=False)
  return method, flow, target, params, ref


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _strip(records):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def _run_until(method, params, opts, n):
  """Runs the first n steps of `method` (as if interrupted after step n) with checkpoints."""
  short = method._replace(n_steps=n)
  # Same step function, shorter budget: the steps themselves are unchanged.
  return train(short, jax.random.PRNGKey(0), params, progress=False, checkpoint=opts)


def test_checkpoints_keep_the_newest_and_follow_the_period(small, tmp_path):
  method, _, _, params, ref = small
  opts = CheckpointOptions(str(tmp_path / "c"), every=4, keep=2, fingerprint="abc")
  res = train(method, jax.random.PRNGKey(0), params, progress=False, checkpoint=opts)
  # Saved after steps 4 and 6 (the last); keep=2 keeps both.
  assert sorted(os.listdir(tmp_path / "c")) == ["4", "6", "history.jsonl"]
  assert res.checkpoint == os.path.join(str(tmp_path / "c"), "6")
  # Checkpointing does not change the numbers.
  for a, b in zip(_leaves(res.state.params), _leaves(ref.state.params)):
    np.testing.assert_array_equal(a, b)
  meta = json.loads((tmp_path / "c" / "6" / "meta" / "metadata").read_text())
  assert meta["n_done"] == 6 and meta["fingerprint"] == "abc" and meta["n_records"] == 6
  assert meta["host"]["target_evals"] == 6 * 256 and meta["host"]["grad_steps"] == 6 * 5


def test_resume_continues_exactly_and_replays_the_records(small, tmp_path):
  method, _, _, params, ref = small
  opts = CheckpointOptions(str(tmp_path / "c"), fingerprint="abc")
  _run_until(method, params, opts, 3)
  replayed = []
  res = train(method, jax.random.PRNGKey(0), params, progress=False, checkpoint=opts,
              resume=True, on_record=replayed.append)
  assert res.resumed_from.endswith(os.sep + "3")
  assert [r["step"] for r in replayed] == list(range(6))  # 3 restored, then 3 new
  assert _strip(res.records) == _strip(ref.records)
  assert res.target_evals == ref.target_evals and res.grad_steps == ref.grad_steps
  for a, b in zip(_leaves(res.state), _leaves(ref.state)):
    np.testing.assert_array_equal(a, b)


def test_checkpoint_size_does_not_grow_with_the_run(small, tmp_path):
  """The records go to history.jsonl once each; a checkpoint's metadata stays the same size."""
  method, _, _, params, _ = small
  opts = CheckpointOptions(str(tmp_path / "c"), keep=10, fingerprint="abc")
  train(method, jax.random.PRNGKey(0), params, progress=False, checkpoint=opts)
  sizes = [(tmp_path / "c" / str(n) / "meta" / "metadata").stat().st_size for n in range(1, 7)]
  # Only the digits of the counters and timings change (a step record alone is ~500 bytes).
  assert max(sizes) - min(sizes) < 64, sizes
  lines = (tmp_path / "c" / "history.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines if '"kind": "step"' in line] == list(
      range(6))


def test_resume_cuts_the_history_back_to_the_checkpoint(small, tmp_path):
  """Records written after the last checkpoint (a kill between the two) are dropped."""
  method, _, _, params, ref = small
  opts = CheckpointOptions(str(tmp_path / "c"), every=2, fingerprint="abc")
  res = train(method, jax.random.PRNGKey(0), params, progress=False, checkpoint=opts)
  shutil.rmtree(tmp_path / "c" / "6")  # as if killed after writing step 6's records
  res = train(method, jax.random.PRNGKey(0), params, progress=False, checkpoint=opts,
              resume=True)
  assert res.resumed_from.endswith(os.sep + "4")
  assert _strip(res.records) == _strip(ref.records)
  steps = [json.loads(line)["step"] for line in
           (tmp_path / "c" / "history.jsonl").read_text().splitlines()
           if '"kind": "step"' in line]
  assert steps == list(range(6))


def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous_one(small, tmp_path):
  method, _, _, params, ref = small
  opts = CheckpointOptions(str(tmp_path / "c"), keep=3, fingerprint="abc")
  _run_until(method, params, opts, 4)
  # Damage every data file of the newest checkpoint's arrays.
  state_dir = tmp_path / "c" / "4" / "state"
  n_damaged = 0
  for root, _, files in os.walk(state_dir):
    for name in files:
      if name not in ("commit_success.txt",):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"\x00garbage")
        n_damaged += 1
  assert n_damaged > 0
  with pytest.warns(RuntimeWarning, match=r"unreadable.*falling back"):
    res = train(method, jax.random.PRNGKey(0), params, progress=False, checkpoint=opts,
                resume=True)
  assert res.resumed_from.endswith(os.sep + "3")
  assert (tmp_path / "c" / "4.corrupt").is_dir()
  assert _strip(res.records) == _strip(ref.records)  # still exact: step 4 is simply redone
  for a, b in zip(_leaves(res.state.params), _leaves(ref.state.params)):
    np.testing.assert_array_equal(a, b)


def test_unusable_checkpoints_are_clear_errors(small, tmp_path):
  method, flow, target, params, _ = small
  opts = CheckpointOptions(str(tmp_path / "c"), fingerprint="abc")
  with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
    train(method, jax.random.PRNGKey(0), params, progress=False, checkpoint=opts, resume=True)
  _run_until(method, params, opts, 2)
  other = CheckpointOptions(str(tmp_path / "c"), fingerprint="xyz")
  with pytest.raises(IncompatibleCheckpointError, match="another configuration"):
    train(method, jax.random.PRNGKey(0), params, progress=False, checkpoint=other, resume=True)
  # With the configurations stored, the error names the settings that differ.
  cfg_a = {"seed": 3, "cmt": {"eps_tr": 0.3, "n_samples": 256}, "flow": {"n_layers": 2}}
  cfg_b = {"seed": 3, "cmt": {"eps_tr": 0.2, "n_samples": 256}, "flow": {"n_layers": 2}}
  named = CheckpointOptions(str(tmp_path / "d"), fingerprint="a", config=cfg_a)
  _run_until(method, params, named, 2)
  with pytest.raises(IncompatibleCheckpointError,
                     match=r"these settings differ \(checkpoint vs this run\): "
                           r"cmt\.eps_tr: 0\.3 vs 0\.2;"):
    train(method, jax.random.PRNGKey(0), params, progress=False, resume=True,
          checkpoint=CheckpointOptions(str(tmp_path / "d"), fingerprint="b", config=cfg_b))
  # Same fingerprint but a different flow: the state layout does not match.
  flow2 = make_flow(FlowConfig(dim=2, coupling="spline", n_layers=2, hidden=(12,), n_bins=4,
                               base_scale=2.0, box=4.0))
  method2 = make_cmt(CMTConfig(n_samples=256, n_grad_steps=5, batch_size=64), flow2, target, 6)
  with pytest.raises(IncompatibleCheckpointError, match="state layout"):
    train(method2, jax.random.PRNGKey(0), flow2.init(jax.random.PRNGKey(1)), progress=False,
          checkpoint=opts, resume=True)


def test_cli_resume_errors(tmp_path, capsys):
  assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
  assert "no config.json" in capsys.readouterr().err
  (tmp_path / "config.json").write_text("{}")
  assert main(["train", "--resume", str(tmp_path), "--target", "gmm40"]) == 2
  assert "drop --target" in capsys.readouterr().err
  assert main(["train", "--resume", str(tmp_path), "--set", "cmt.eps_tr=0.1"]) == 2
  assert "only checkpoint.*" in capsys.readouterr().err
  assert main(["train", "--target", "double_well2d"]) == 2
  assert "--out is required" in capsys.readouterr().err
