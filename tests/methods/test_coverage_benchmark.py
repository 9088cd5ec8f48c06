"""benchmarks/coverage.py: target specs expand to instances; a tiny grid writes its table."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "coverage.py")


def _module():
  spec = importlib.util.spec_from_file_location("cmtjax_coverage", _PATH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_target_specs_expand_to_every_combination():
  cov = _module()
  got = cov.expand_target("gmm16:dim=5/8,seed=0/1/2")
  assert len(got) == 6
  assert got[0] == ("gmm16_dim5_seed0", "gmm16", {"dim": 5, "seed": 0})
  assert got[-1] == ("gmm16_dim8_seed2", "gmm16", {"dim": 8, "seed": 2})
  assert cov.expand_target("gmm40_fab") == [("gmm40_fab", "gmm40_fab", {})]
  assert cov.covered({"modes_covered": 4, "n_modes": 4, "log_z_error": -0.01}, 0.02)
  assert not cov.covered({"modes_covered": 4, "n_modes": 4, "log_z_error": -0.03}, 0.02)
  assert not cov.covered({"modes_covered": 3, "n_modes": 4, "log_z_error": 0.0}, 0.02)


@pytest.mark.slow
def test_a_tiny_grid_writes_one_row_per_run(tmp_path):
  res = tmp_path / "res"
  cmd = [sys.executable, _PATH, "--targets", "gmm16:dim=2,seed=0/1", "--seeds", "0",
         "--name", "tiny", "--budget", "3000", "--jobs", "1",
         "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(res),
         "--set", "cmt.n_samples=500", "--set", "cmt.n_samples_annealing=1000",
         "--set", "cmt.n_grad_steps=3", "--set", "cmt.batch_size=128",
         "--set", "eval.n_samples=1000", "--set", "eval.every=0", "--set", "eval.n_repeats=1",
         "--set", "checkpoint.enabled=false", "--set", "flow.n_layers=2",
         "--set", "flow.hidden=[16]"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((res / "coverage_tiny.json").read_text())
  assert [(r["instance"], r["seed"]) for r in results["runs"]] == [
      ("gmm16_dim2_seed0", 0), ("gmm16_dim2_seed1", 0)]
  for r in results["runs"]:
    m = r["metrics"]
    assert "error" not in m and m["n_modes"] == 16 and m["target_evals"] <= 3000
    assert m["cpu_seconds_run"] > 0 and isinstance(m["warnings"], list)
  table = (res / "coverage_tiny.md").read_text()
  assert "runs" in table.splitlines()[2] and table.count("| gmm16_dim2_seed") == 2
