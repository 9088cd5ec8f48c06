"""End-to-end: CMT on GMM-40 at a reduced budget (the README demo's configuration)."""

import pytest

from cmtjax.io.config import build_config
from cmtjax.io.presets import preset_for
from cmtjax.runner import run


@pytest.mark.slow
def test_cmt_covers_gmm40_at_a_reduced_budget():
  """30 annealing steps (3e5 evaluations) of the demo configuration already cover every mode;
  the full demo budget (2e6) reaches reverse ESS ≈ 0.95 (benchmarks/core.py)."""
  cfg = build_config([preset_for("gmm40"), {
      "target": "gmm40", "method": "cmt", "seed": 0, "max_target_evals": 300_000,
      "eval": {"n_samples": 20_000, "n_repeats": 2, "every": 0}}])
  m = run(cfg, None, progress=False)
  assert m["modes_covered"] >= 38, m
  assert abs(m["log_z_error"]) < 0.05, m
  assert m["reverse_ess"] > 0.6, m
  assert m["target_evals"] == 300_000
  assert m["dual_converged_fraction"] == 1.0
