"""Run configs: layering, validation errors that name the key, round trip."""

import json

import pytest

from cmtjax.io.config import (ConfigError, RunConfig, build_config, load_file, parse_override,
                              save_config, to_dict)
from cmtjax.io.presets import PRESETS, preset_for


def test_defaults_and_layers():
  cfg = build_config([preset_for("gmm40"), {"cmt": {"eps_tr": 0.2}},
                      parse_override("cmt.n_samples=5000"), {"seed": 3}])
  assert isinstance(cfg, RunConfig)
  assert cfg.method_config.eps_tr == 0.2 and cfg.method_config.n_samples == 5000 and cfg.seed == 3
  assert cfg.method_config.eps_ent == PRESETS["gmm40"]["cmt"]["eps_ent"]
  assert cfg.flow["base_scale"] == 20.0


@pytest.mark.parametrize("layer,match", [
    ({"cmt": {"eps_trr": 0.1}}, "unknown config key 'cmt.eps_trr'"),
    ({"bogus": 1}, "unknown config key 'bogus'"),
    ({"flow": {"n_binz": 3}}, "unknown config key 'flow.n_binz'"),
    ({"cmt": {"eps_tr": "big"}}, "cmt.eps_tr: expected a number"),
    ({"cmt": {"n_samples": 1.5}}, "cmt.n_samples: expected an integer"),
    ({"cmt": {"eps_tr": -1.0}}, "cmt.eps_tr must be > 0"),
    ({"cmt": {"path": "geo"}}, "unknown path 'geo'"),
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"flow": {"coupling": "magic"}}, "flow: FlowConfig.coupling"),
    ({"version": 99}, "config version 99 is not supported"),
    ({"max_target_evals": 0}, "max_target_evals must be >= 1"),
])
def test_bad_configs_name_the_problem(layer, match):
  with pytest.raises(ConfigError, match=match):
    build_config([layer])


def test_round_trip_through_json(tmp_path):
  cfg = build_config([preset_for("many_well32"), {"cmt": {"anneal_steps": 7}}])
  path = tmp_path / "config.json"
  save_config(cfg, str(path))
  again = build_config([load_file(str(path))])
  assert again == cfg
  assert to_dict(again) == json.loads(path.read_text())


def test_toml_and_missing_files(tmp_path):
  p = tmp_path / "c.toml"
  p.write_text('target = "double_well2d"\n[cmt]\neps_ent = 0.7\n')
  cfg = build_config([load_file(str(p))])
  assert cfg.target == "double_well2d" and cfg.method_config.eps_ent == 0.7
  with pytest.raises(ConfigError, match="config file not found"):
    load_file(str(tmp_path / "nope.json"))
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ConfigError, match="cannot parse config file"):
    load_file(str(bad))
  with pytest.raises(ConfigError, match="must look like"):
    parse_override("cmt.eps_tr")


def test_a_renamed_key_loads_with_a_warning_naming_the_new_one():
  with pytest.warns(FutureWarning, match="'cmt.n_fit_steps' is now called 'n_grad_steps'"):
    cfg = build_config([{"cmt": {"n_fit_steps": 7}}])
  assert cfg.method_config.n_grad_steps == 7
  with pytest.warns(FutureWarning):
    assert build_config([{"method": "tabg", "tabg": {"n_samples": 70, "n_fit_steps": 7}}]
                        ).method_config.n_grad_steps == 7
  with pytest.raises(ConfigError, match="old name of 'cmt.n_grad_steps'"):
    build_config([{"cmt": {"n_fit_steps": 7, "n_grad_steps": 8}}])


def test_a_config_without_init_params_keeps_its_fingerprint():
  """init_params (added later) is left out of the fingerprint when unset, so checkpoints
  written before it existed still resume."""
  from cmtjax.runner import fingerprinted_config
  fp = fingerprinted_config(build_config([{"target": "double_well2d"}]))
  assert "init_params" not in fp and "init_params_sha256" not in fp


def test_settings_added_later_keep_the_fingerprint_at_their_defaults():
  """cmt.refine_min_ess, fit_weight_cap and refine_skip_ess are left out of the fingerprint
  at their defaults (so older checkpoints resume); the fingerprint an earlier version gave the
  same config (refine_min_ess hashed at 0.0) is accepted too; a setting away from its
  default is part of the hash."""
  from cmtjax.runner import earlier_fingerprints, fingerprinted_config, run_fingerprint
  from cmtjax.train import fingerprint
  cfg = build_config([{"target": "double_well2d"}])
  fp = fingerprinted_config(cfg)
  for key in ("refine_min_ess", "fit_weight_cap", "refine_skip_ess"):
    assert key not in fp["cmt"], key
  older = dict(fp, cmt=dict(fp["cmt"], refine_min_ess=0.0))
  assert earlier_fingerprints(cfg) == (fingerprint(older),)
  assert fingerprint(older) != run_fingerprint(cfg)
  floored = build_config([{"target": "double_well2d", "cmt": {"refine_min_ess": 0.3,
                                                             "fit_weight_cap": 50}}])
  assert fingerprinted_config(floored)["cmt"]["refine_min_ess"] == 0.3
  assert fingerprinted_config(floored)["cmt"]["fit_weight_cap"] == 50
  assert earlier_fingerprints(floored) == ()
