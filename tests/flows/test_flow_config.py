"""Validation of FlowConfig."""

from __future__ import annotations

import pytest

from cmtjax.flows import FlowConfig, cartesian_couplings, make_flow


@pytest.mark.parametrize("field,value", [
    ("dim", 1), ("dim", 0), ("dim", 2.0), ("dim", True),
    ("coupling", "maf"), ("n_layers", 0), ("n_layers", 1.5),
    ("hidden", (128, 0)), ("hidden", (128.0,)), ("hidden", 128),
    ("n_bins", 1), ("box", 0.0), ("box", -1.0), ("box", float("inf")),
    ("base_scale", 0.0), ("base_scale", float("nan")), ("permutation", "reverse"),
    ("seed_permutation", 0.5), ("activation", "relu"), ("max_log_scale", 0.0),
    ("spline_backend", "tfp"),
])
def test_invalid_field_raises_naming_it(field, value):
  kwargs = {"dim": 3, field: value}
  with pytest.raises(ValueError, match=field):
    FlowConfig(**kwargs)


def test_list_hidden_is_coerced_to_tuple_and_config_is_hashable():
  cfg = FlowConfig(dim=2, hidden=[8, 8])
  assert cfg.hidden == (8, 8)
  assert hash(cfg) == hash(FlowConfig(dim=2, hidden=(8, 8)))
  assert cfg.to_dict()["hidden"] == [8, 8]


def test_make_flow_rejects_non_config():
  with pytest.raises(TypeError):
    make_flow({"dim": 2})


@pytest.mark.parametrize("dim", [2, 3, 5, 7])
@pytest.mark.parametrize("permutation", ["alternate", "random"])
def test_layouts_split_evenly_and_cover_every_coordinate(dim, permutation):
  cfg = FlowConfig(dim=dim, n_layers=6, permutation=permutation,
                   seed_permutation=3)
  layers = cartesian_couplings(cfg)
  assert len(layers) == 6
  for k in range(0, 6, 2):
    a, b = layers[k], layers[k + 1]
    assert {len(a.trans_idx), len(b.trans_idx)} == {dim // 2, dim - dim // 2}
    for layer in (a, b):
      assert sorted([*layer.cond_idx, *layer.trans_idx]) == list(range(dim))
    # The pair transforms complementary halves of the same arrangement.
    assert list(a.trans_idx) == list(b.cond_idx) and list(a.cond_idx) == list(b.trans_idx)
  if permutation == "random" and dim >= 5:
    # Different pairs use different arrangements.
    assert any(list(layers[0].cond_idx) != list(layers[k].cond_idx) for k in (2, 4))
  if permutation == "alternate":
    assert list(layers[0].cond_idx) == list(range(dim // 2))
