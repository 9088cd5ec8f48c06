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


def test_ess_plot_of_several_seeds(tmp_path):
  curve = lambda ess: [{"target_evals": 1000 * (i + 1), "reverse_ess": e}
                       for i, e in enumerate(ess)]
  path = str(tmp_path / "ess.png")
  compare.plot_ess(path, {"cmt": [curve([0.1, 0.5, 0.9]), curve([0.2, 0.6])],
                          "fab": [curve([0.05, None, 0.3])], "none": [[]]}, "t")
  assert os.path.getsize(path) > 1000
