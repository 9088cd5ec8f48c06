"""The baselines in the method registry, RunConfig and the CLI: configs validate, bad values
are clear."""

from __future__ import annotations

import json

import pytest

from cmtjax.cli import main
from cmtjax.io.config import ConfigError, build_config
from cmtjax.io.presets import preset_for
from cmtjax.methods import evals_per_step, method_names


def test_every_baseline_is_registered_with_a_config_section():
  for name in ("fab", "tabg", "forward_kl"):
    assert name in method_names()
    cfg = build_config([preset_for("gmm40"), {"method": name}])
    assert cfg.method == name and evals_per_step(name, cfg.method_config) > 0
  cfg = build_config([{"method": "fab", "fab": {"n_leapfrog": 2, "n_intermediate": 4,
                                                "n_ais_samples": 64, "batch_size": 64,
                                                "buffer_capacity": 256}}])
  assert evals_per_step("fab", cfg.method_config) == 64 * (1 + 4 * 1 * 2)
  cfg = build_config([{"method": "tabg", "tabg": {"temperatures": [900, 600, 300]}}])
  assert cfg.method_config.temperatures == (900.0, 600.0, 300.0)


@pytest.mark.parametrize("layer, match", [
    ({"fab": {"batch_size": 4096}}, "fab: fab.batch_size"),
    ({"fab": {"n_leapfrogs": 3}}, "unknown config key 'fab.n_leapfrogs'"),
    ({"tabg": {"n_grad_steps": 3}}, "multiple of tabg.n_grad_steps"),
    ({"tabg": {"temperatures": "hot"}}, "tabg.temperatures"),
    ({"forward_kl": {"batch_size": 0}}, "forward_kl.batch_size must be >= 1"),
])
def test_bad_baseline_configs_name_the_key(layer, match):
  with pytest.raises(ConfigError, match=match):
    build_config([layer])


TINY = ["--set", 'flow.hidden=[16]', "--set", "flow.n_layers=2", "--set", "eval.n_samples=2000",
        "--set", "eval.n_repeats=1", "--set", "eval.every=0", "--no-progress"]


@pytest.mark.slow
@pytest.mark.parametrize("method, sets, budget, evals", [
    ("fab", ["fab.n_ais_samples=64", "fab.batch_size=64", "fab.buffer_capacity=128",
             "fab.n_intermediate=2", "fab.n_leapfrog=2", "fab.n_grad_steps=3"], 1000, 3 * 320),
    ("tabg", ["tabg.n_samples=500", "tabg.n_grad_steps=5", "tabg.buffer_size=500",
              "tabg.batch_size=64", "tabg.n_reverse_kl_steps=1"], 1500, 1500),
    ("forward_kl", ["forward_kl.batch_size=64", "forward_kl.n_grad_steps=5"], 700, 640),
])
def test_cli_trains_each_baseline(tmp_path, method, sets, budget, evals):
  out = tmp_path / method
  args = ["train", "--target", "double_well2d", "--method", method, "--out", str(out),
          "--budget", str(budget), *TINY]
  for s in sets:
    args += ["--set", s]
  assert main(args) == 0
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["method"] == method and metrics["target_evals"] == evals
  assert (out / "training.png").is_file() and (out / "steps.jsonl").is_file()
