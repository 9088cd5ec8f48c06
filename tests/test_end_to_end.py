"""End-to-end: CMT on GMM-40 at a reduced budget (the README demo's configuration)."""

import pytest

from cmtjax.io.config import build_config
from cmtjax.io.presets import preset_for
from cmtjax.runner import run


@pytest.mark.slow
def test_cmt_covers_gmm40_at_a_reduced_budget():
  """The demo's configuration at 1.2e6 evaluations (the demo spends 1.5e6): the annealing
  (N = 1e5 per step, ten steps) ends with every mode, log Z within 0.02, no warnings; the rest
  of the budget refines at the target with N = 1e4 (docs/coverage.md). The ESS still swings
  from step to step here: seeds 0/1/2 read 0.905 / 0.844 / 0.911 at 1.2e6 but 0.742 / 0.761 /
  0.880 at 1.1e6 (2026-12-04; the spline gradient before its reordering, bit-different in
  float32, read 0.88 / 0.87 / 0.90 at 1.1e6); below 1e6 the run has not reached the target."""
  cfg = build_config([preset_for("gmm40"), {
      "target": "gmm40", "method": "cmt", "seed": 0, "max_target_evals": 1_200_000,
      "eval": {"n_samples": 20_000, "n_repeats": 2, "every": 0}}])
  m = run(cfg, None, progress=False)
  assert m["modes_covered"] == 40, m
  assert abs(m["log_z_error"]) < 0.02, m
  assert m["reverse_ess"] > 0.8, m
  assert m["warnings"] == [], m
  assert 1_200_000 - 10_000 < m["target_evals"] <= 1_200_000
  assert m["target_reached_at_step"] is not None
  assert m["dual_converged_fraction"] == 1.0
