"""Molecular metrics: Ramachandran TV/KL, energy and torus distances, chirality, cis peptide
bonds, figures."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from cmtjax.metrics import (
    backbone_angles,
    chirality_error_rate,
    cis_peptide_bonds,
    energy_above_reference,
    energy_distance,
    molecular_figures,
    ramachandran_histogram,
    ramachandran_divergences,
    ramachandran_kl,
    ramachandran_tv,
    split_halves,
    split_tv_spread,
    torus_w2,
)

pytest.importorskip("openmm")
pytest.importorskip("mdtraj")

_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "cmtjax", "targets", "molecules",
                     "data")


def _structure(name: str):
  """(topology, minimum-energy positions [1, 3 N] in nm) of a shipped system."""
  import mdtraj

  from cmtjax.targets.molecules.topology import load_topology

  path = os.path.join(_DATA, f"{name}.pdb")
  return load_topology(path), mdtraj.load(path).xyz.reshape(1, -1).astype(np.float64)


@pytest.fixture(scope="module")
def aldp():
  return _structure("aldp")


def _wrapped_normal(rng, n, centre, scale=0.3):
  return np.pi - np.mod(np.pi - (centre + scale * rng.normal(size=(n, 2))), 2 * np.pi)


def test_histogram_normalised_and_edges():
  h = ramachandran_histogram(np.array([np.pi, -np.pi, -np.pi + 1e-9, 0.0]),
                             np.array([np.pi, np.pi, -np.pi + 1e-9, 0.0]), bins=4)
  assert h.shape == (4, 4)
  assert h.sum() == pytest.approx(1.0)
  # π and -π (≡ π) fall in the last bin, just above -π in the first, 0 in bin 1 ((-π/2, 0]).
  assert h[3, 3] == pytest.approx(0.5)
  assert h[0, 0] == pytest.approx(0.25)
  assert h[1, 1] == pytest.approx(0.25)
  multi = ramachandran_histogram(np.zeros((5, 3)), np.zeros((5, 3)), bins=10)
  assert multi.shape == (3, 10, 10)
  np.testing.assert_allclose(multi.sum(axis=(1, 2)), 1.0)


def test_tv_identical_zero_disjoint_one():
  rng = np.random.default_rng(0)
  a = _wrapped_normal(rng, 2000, np.array([-1.5, 2.5]), 0.2)
  b = _wrapped_normal(rng, 3000, np.array([1.0, -0.8]), 0.2)
  assert ramachandran_tv(a, a) == pytest.approx(0.0, abs=1e-12)
  assert ramachandran_tv(a, b) == pytest.approx(1.0)
  # Two pairs: identical on one, disjoint on the other -> mean 0.5.
  two_a = np.stack([a[:2000], a[:2000]], axis=1)
  two_b = np.stack([a[:2000], b[:2000]], axis=1)
  assert ramachandran_tv(two_a, two_b) == pytest.approx(0.5)


def test_kl_nonnegative_and_zero_for_identical():
  rng = np.random.default_rng(1)
  a = _wrapped_normal(rng, 5000, np.array([-1.5, 2.5]), 0.5)
  b = _wrapped_normal(rng, 5000, np.array([-1.2, 2.0]), 0.7)
  assert 0.0 <= ramachandran_kl(a, a) < 1e-5
  assert ramachandran_kl(a, b) > 0.1
  # Disjoint: every reference bin is empty under the model, each costs ~ -log(floor).
  c = _wrapped_normal(rng, 5000, np.array([1.0, -0.8]), 0.2)
  assert ramachandran_kl(c, a) > 15.0
  w = rng.uniform(size=5000)
  assert ramachandran_kl(b, a, model_weights=w) >= 0.0


def test_weighted_histogram_matches_resampled():
  rng = np.random.default_rng(2)
  n = 20000
  a = rng.uniform(-np.pi, np.pi, size=(n, 2))
  w = np.exp(2.0 * np.cos(a[:, 0]) + np.sin(a[:, 1]))
  h_w = ramachandran_histogram(a[:, 0], a[:, 1], w, bins=8)
  idx = rng.choice(n, size=200000, p=w / w.sum())
  h_r = ramachandran_histogram(a[idx, 0], a[idx, 1], bins=8)
  assert 0.5 * np.abs(h_w - h_r).sum() < 0.02
  # The weights matter: the unweighted histogram is far from both.
  assert 0.5 * np.abs(ramachandran_histogram(a[:, 0], a[:, 1], bins=8) - h_r).sum() > 0.2
  assert ramachandran_tv(a[idx], a, model_weights=None, bins=8) > 0.2
  assert ramachandran_tv(a, a[idx], model_weights=w, bins=8) < 0.02


def test_energy_distance_closed_forms():
  rng = np.random.default_rng(3)
  e = rng.normal(size=1000) * 5.0 - 100.0
  d = energy_distance(e, e + 3.0)
  assert d.w1 == pytest.approx(3.0, rel=1e-9)
  assert d.w2 == pytest.approx(3.0, rel=1e-9)
  # A point mass at 0 against {0, 1}: W1 = 1/2, W2 = sqrt(1/2).
  d = energy_distance(np.array([0.0]), np.array([0.0, 1.0]))
  assert d.w1 == pytest.approx(0.5)
  assert d.w2 == pytest.approx(math.sqrt(0.5))
  # Weights that reproduce the reference exactly; non-finite energies are dropped.
  d = energy_distance(np.array([0.0, 1.0, np.inf]), np.array([0.0, 1.0, 1.0, 1.0]),
                      weights=np.array([0.25, 0.75, 1.0]))
  assert d.w1 == pytest.approx(0.0, abs=1e-12)


def test_energy_w1_matches_scipy():
  from scipy.stats import wasserstein_distance

  rng = np.random.default_rng(4)
  a, b = rng.gamma(2.0, size=300), rng.normal(size=450)
  w = rng.uniform(size=300)
  assert energy_distance(a, b, w).w1 == pytest.approx(
      wasserstein_distance(a, b, u_weights=w), rel=1e-9)


def test_energy_w1_capped_ignores_how_far_exploded_samples_went():
  rng = np.random.default_rng(5)
  ref = rng.normal(size=2000)
  # No model energy above the reference's highest: the plain W1 exactly, nothing capped.
  model = np.minimum(rng.normal(size=1000) + 0.5, ref.max())
  clean = energy_above_reference(model, ref)
  assert clean["energy_above_reference_fraction"] == 0.0
  assert clean["energy_w1_capped"] == pytest.approx(energy_distance(model, ref).w1, rel=1e-12)
  # Ten samples explode (far, +inf, NaN): the plain W1 is theirs alone; the capped one moves
  # by at most their share times the reference's range and not with how far they went.
  capped = []
  for far in (1e9, 1e12):
    bad = model.copy()
    bad[:8], bad[8], bad[9] = far, np.inf, np.nan
    cap = energy_above_reference(bad, ref)
    capped.append(cap["energy_w1_capped"])
    assert cap["energy_above_reference_fraction"] == pytest.approx(0.01)
    assert energy_distance(bad, ref).w1 > 1e6
    assert abs(cap["energy_w1_capped"] - clean["energy_w1_capped"]) <= 0.01 * np.ptp(ref)
  assert capped[0] == pytest.approx(capped[1], rel=1e-12)
  assert np.isnan(energy_above_reference(np.zeros(0), ref)["energy_w1_capped"])
  assert np.isnan(energy_above_reference(model, [np.nan])["energy_above_reference_fraction"])


def test_split_tv_spread_over_random_walker_splits():
  rng = np.random.default_rng(7)
  base = rng.uniform(-np.pi, np.pi, size=(50, 2, 2))
  # Eight walkers with the very same frames: every split gives TV 0.
  same = split_tv_spread(np.tile(base, (8, 1, 1)), np.repeat(np.arange(8), 50), n_splits=20)
  assert same["median_per_pair"] == [0.0, 0.0] and same["p90_per_pair"] == [0.0, 0.0]
  assert same["n_blocks"] == 8 and same["n_splits"] == 20
  # Four equal walkers, one of them always in another bin on pair 0: whichever half holds it
  # has half its frames there, the other none, so every split gives TV 0.5 on that pair.
  angles = np.tile(base, (4, 1, 1))
  angles[:, 0, :] = 0.5
  angles[:50, 0, :] = -2.5
  odd = split_tv_spread(angles, np.repeat(np.arange(4), 50), n_splits=30)
  assert odd["median_per_pair"][0] == pytest.approx(0.5)
  assert odd["p10_per_pair"][0] == pytest.approx(0.5)
  assert odd["median_per_pair"][1] == pytest.approx(0.0)
  # The same as the histogram TV of one such split (walkers 0, 1 against 2, 3).
  halves = np.repeat(np.arange(4), 50) < 2
  assert ramachandran_tv(angles[halves, 0], angles[~halves, 0], bins=36) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="at least 2 blocks"):
    split_tv_spread(angles, np.zeros(200))


def test_torus_w2_wraps_around():
  deg = np.pi / 180.0
  a = np.array([[179.0 * deg, -179.0 * deg]])
  b = np.array([[-179.0 * deg, 179.0 * deg]])
  assert torus_w2(a, b) == pytest.approx(math.sqrt(2.0) * 2.0 * deg)


def test_torus_w2_hand_computed():
  model = np.array([[0.0, 0.0], [np.pi - 0.1, 0.0]])
  ref = np.array([[-np.pi + 0.1, 0.0], [0.2, 0.1]])
  # Optimal matching: (0, 0)->(0.2, 0.1) costs 0.05, (π-0.1, 0)->(-π+0.1, 0) costs 0.2² = 0.04.
  expected = math.sqrt((0.05 + 0.04) / 2)
  assert torus_w2(model, ref) == pytest.approx(expected)
  # Two backbone pairs are averaged; a zero-distance pair halves the figure.
  two_m = np.stack([model, model], axis=1)
  two_r = np.stack([ref, model], axis=1)
  assert torus_w2(two_m, two_r) == pytest.approx(expected / 2)
  # All weight on (0, 0): both resampled points sit there.
  w_expected = math.sqrt((0.05 + (np.pi - 0.1) ** 2) / 2)
  assert torus_w2(model, ref, weights=np.array([1.0, 0.0])) == pytest.approx(w_expected)


def test_chirality_of_mirror_images(aldp):
  from cmtjax.targets.molecules.topology import chiral_centres, chirality_signs

  for top, x in (aldp, _structure("ala4")):
    centres = chiral_centres(top)
    signs = np.asarray(chirality_signs(x, centres))[0]
    assert np.all(signs != 0)
    np.testing.assert_array_equal(np.asarray(chirality_signs(-x, centres))[0], -signs)
    assert chirality_error_rate(x, centres, signs) == 0.0
    assert chirality_error_rate(-x, centres, signs) == 1.0
    assert chirality_error_rate(np.concatenate([x, -x, x, x]), centres, signs) == 0.25


def _cis_at_nme(top, x):
  """x with the NME cap turned by 180° about its peptide bond C(Ala)-N(Nme): that bond cis."""
  pos = x.reshape(len(x), -1, 3).copy()
  c, n = top.find(1, "C"), top.find(2, "N")
  axis = (pos[:, n] - pos[:, c]) / np.linalg.norm(pos[:, n] - pos[:, c], axis=-1,
                                                   keepdims=True)
  cap = np.asarray(top.residue_index) == 2
  rel = pos[:, cap] - pos[:, n, None]
  # Rodrigues' rotation by π: v -> 2 (v·k) k - v.
  pos[:, cap] = pos[:, n, None] + 2 * np.sum(rel * axis[:, None], -1, keepdims=True) * (
      axis[:, None]) - rel
  return pos.reshape(len(x), -1)


def test_cis_peptide_bonds_of_a_turned_cap(aldp):
  from cmtjax.targets.molecules.topology import peptide_bonds

  top, x = aldp
  names = [[(top.residue_names[i], top.atom_names[i]) for i in row] for row in peptide_bonds(top)]
  assert names == [[("ACE", "CH3"), ("ACE", "C"), ("ALA", "N"), ("ALA", "CA")],
                   [("ALA", "CA"), ("ALA", "C"), ("NME", "N"), ("NME", "C")]]
  x_cis = _cis_at_nme(top, x)
  np.testing.assert_array_equal(cis_peptide_bonds(np.concatenate([x, x_cis]), top),
                                [[False, False], [False, True]])
  # Bond lengths and the backbone pair are untouched by the turn.
  np.testing.assert_allclose(backbone_angles(x_cis, top)[0, 0, 0],
                             backbone_angles(x, top)[0, 0, 0], atol=1e-9)
  assert cis_peptide_bonds(x[:0], top).shape == (0, 2)
  with pytest.raises(ValueError, match="must be"):
    cis_peptide_bonds(x[:, :-3], top)


def test_cis_figures_count_the_isomer_plain_reweighted_and_in_the_reference(aldp):
  from cmtjax.metrics import run_warnings

  top, x0 = aldp
  rng = np.random.default_rng(3)
  jitter = lambda n: 0.002 * rng.normal(size=(n, x0.shape[1]))  # noqa: E731
  x_cis = _cis_at_nme(top, x0)
  # Reference: 1 cis frame in 10. Model: 4 cis samples in 20, carrying a tenth of the weight.
  x_ref = np.concatenate([x0 + jitter(9), x_cis + jitter(1)])
  x_model = np.concatenate([x0 + jitter(16), x_cis + jitter(4)])
  log_w = np.log(np.concatenate([np.full(16, 0.9 / 16), np.full(4, 0.1 / 4)]))
  e_ref, e_model = np.zeros(10), np.zeros(20)
  fig = molecular_figures(x_model, log_w, e_model, x_ref, -e_ref, -e_ref, e_ref, top,
                          torus_n=10)
  assert fig["cis_peptide_fraction"] == pytest.approx(0.2)
  assert fig["cis_peptide_fraction_per_bond"] == [0.0, pytest.approx(0.2)]
  assert fig["cis_peptide_fraction_reweighted"] == pytest.approx(0.1)
  assert fig["cis_peptide_fraction_reference_per_bond"] == [0.0, pytest.approx(0.1)]
  assert fig["n_ref_cis_peptide"] == 1
  assert not any("cis" in w for w in run_warnings(fig))
  # A flow that samples the isomer at a negligible weight misses it: a warning says so.
  log_w[16:] = -40.0
  fig = molecular_figures(x_model, log_w, e_model, x_ref, -e_ref, -e_ref, e_ref, top,
                          torus_n=10)
  (w,) = [w for w in run_warnings(fig) if "cis" in w]
  assert w.startswith("peptide bond 2: 0.1 of the reference is cis (1 frame)")


def test_backbone_angles_of_mirror(aldp):
  top, x = aldp
  a = backbone_angles(np.concatenate([x, -x]), top)
  assert a.shape == (2, 1, 2)
  np.testing.assert_allclose(a[1], -a[0], atol=1e-5)  # mirroring flips dihedral signs


def test_molecular_figures_synthetic(aldp):
  top, x0 = aldp
  rng = np.random.default_rng(5)
  m = 400
  x_ref = x0 + 0.01 * rng.normal(size=(m, x0.shape[1]))
  e_ref = rng.normal(size=m) * 10.0 - 50.0
  log_p_ref = -e_ref / 2.5
  log_q_ref = log_p_ref - 0.3 + 0.1 * rng.normal(size=m)
  log_q_ref[:7] = -np.inf  # outside the flow's support
  # Model = reference samples (same angles, same energies) plus 3 mirrored ones.
  x_model = np.concatenate([x_ref, -x_ref[:3]])
  e_model = np.concatenate([e_ref, [-1e3, -1e3, -1e3]])
  log_w = np.zeros(m + 3)
  log_w[5] = -np.inf
  log_w[6] = np.nan
  fig = molecular_figures(x_model, log_w, e_model, x_ref, log_p_ref, log_q_ref, e_ref, top,
                          torus_n=m)  # k = m: all points, so exact matching
  expected_keys = {
      "eubo", "nll", "forward_ess", "forward_ess_without_top", "forward_top_log_w_excess",
      "log_z_forward", "ramachandran_tv",
      "ramachandran_tv_reweighted", "ramachandran_kl", "ramachandran_kl_reweighted",
      "energy_w1", "energy_w2", "energy_w1_reweighted", "energy_w2_reweighted",
      "energy_w1_capped", "energy_above_reference_fraction", "torus_w2",
      "torus_w2_reweighted", "chirality_error_rate", "n_wrong_chirality",
      "n_ref_outside_support", "n_ref_nonfinite", "n_model_nonfinite_log_w", "n_model",
      "n_ref", "n_ref_forward"}
  rama = {f"ramachandran_{s}{k}{b}" for s in ("tv", "kl") for k in ("", "_reweighted")
          for b in ("", "_36")}
  expected_keys |= rama | {f"{n}_per_pair" for n in rama} | {f"{n}_floor_model" for n in rama}
  expected_keys |= {f"ramachandran_{s}{b}_floor_reference" for s in ("tv", "kl")
                    for b in ("", "_36")}
  expected_keys |= {f"ramachandran_tv{k}{b}_floor_model_per_pair" for k in ("", "_reweighted")
                    for b in ("", "_36")}
  expected_keys |= {f"ramachandran_tv{b}_floor_reference_per_pair" for b in ("", "_36")}
  cis = {f"cis_peptide_fraction{k}" for k in ("", "_reweighted", "_reference")}
  expected_keys |= cis | {f"{n}_per_bond" for n in cis} | {"n_ref_cis_peptide"}
  assert set(fig) == expected_keys
  assert fig["n_ref_outside_support"] == 7
  assert fig["n_ref_nonfinite"] == 7
  ok = np.isfinite(log_q_ref)
  assert fig["eubo"] == pytest.approx(np.mean((log_p_ref - log_q_ref)[ok]), rel=1e-5)
  assert fig["nll"] == pytest.approx(-np.mean(log_q_ref[ok]), rel=1e-6)
  assert 0.0 < fig["forward_ess"] <= 1.0
  assert fig["n_wrong_chirality"] == 3
  assert fig["chirality_error_rate"] == pytest.approx(3 / (m + 3))
  assert fig["n_model_nonfinite_log_w"] == 2
  # Mirrored samples are left out: the rest equals the reference exactly.
  assert fig["ramachandran_tv"] == pytest.approx(0.0, abs=1e-12)
  assert fig["ramachandran_kl"] < 1e-5
  assert fig["energy_w1"] == pytest.approx(0.0, abs=1e-9)
  assert fig["energy_w1_capped"] == pytest.approx(0.0, abs=1e-9)
  assert fig["energy_above_reference_fraction"] == 0.0
  assert fig["torus_w2"] == pytest.approx(0.0, abs=1e-9)
  # Reweighting drops the two non-finite log weights only: nearly identical.
  assert fig["ramachandran_tv_reweighted"] <= 2 / (m - 2) + 1e-9
  assert fig["energy_w1_reweighted"] < 1.0
  assert all(isinstance(v, (int, float)) or (k.endswith("_per_pair") and len(v) == 1)
             or (k.endswith("_per_bond") and len(v) == 2) for k, v in fig.items())
  assert fig["cis_peptide_fraction_reference"] == fig["cis_peptide_fraction"] == 0.0
  assert fig["n_ref_cis_peptide"] == 0
  # Forward figures on a subset of the reference (frames a forward-KL flow never saw): the
  # same as on that subset alone; the Ramachandran and energy figures still use every frame.
  held = np.arange(m) % 2 == 1
  part = molecular_figures(x_model, log_w, e_model, x_ref, log_p_ref, log_q_ref, e_ref, top,
                           torus_n=m, forward_mask=held)
  alone = molecular_figures(x_model, log_w, e_model, x_ref[held], log_p_ref[held],
                            log_q_ref[held], e_ref[held], top, torus_n=m // 2)
  for k in ("eubo", "nll", "forward_ess", "log_z_forward", "n_ref_outside_support"):
    assert part[k] == pytest.approx(alone[k], rel=1e-6), k
  assert part["n_ref_forward"] == held.sum() and part["n_ref"] == m
  assert part["n_ref_outside_support"] == 3  # rows 1, 3, 5 of the 7
  assert part["ramachandran_tv"] == fig["ramachandran_tv"]
  with pytest.raises(ValueError, match="forward_mask"):
    molecular_figures(x_model, log_w, e_model, x_ref, log_p_ref, log_q_ref, e_ref, top,
                      forward_mask=np.zeros(m, bool))


def _pair_angles(rng, n, centre, spread=0.5, n_pairs=2):
  """[n, n_pairs, 2] wrapped-normal angles around ``centre``."""
  a = centre + spread * rng.normal(size=(n, n_pairs, 2))
  return np.angle(np.exp(1j * a))


def test_noise_floors_separate_sampling_noise_from_a_real_difference():
  rng = np.random.default_rng(0)
  ref = _pair_angles(rng, 4000, 0.0)
  blocks = np.repeat(np.arange(8), 500)
  same = ramachandran_divergences(_pair_angles(rng, 4000, 0.0), ref, ref_blocks=blocks, bins=36)
  # Same distribution: the distance is of the size of its floors (sampling noise only), and
  # the floors (half-size samples) are above it, by about sqrt(2) for TV.
  for stat in ("tv", "kl"):
    assert same[stat] > 0
    assert 0.8 * same[stat] < same[f"{stat}_floor_reference"] < 3.0 * same[stat], stat
    assert 0.8 * same[stat] < same[f"{stat}_floor_model"] < 3.0 * same[stat], stat
  assert len(same["tv_per_pair"]) == 2
  for floor in ("tv_floor_reference", "tv_floor_model"):  # per pair, averaging to the mean
    assert len(same[f"{floor}_per_pair"]) == 2
    assert np.mean(same[f"{floor}_per_pair"]) == pytest.approx(same[floor])
  # A shifted model: far above both floors.
  shifted = ramachandran_divergences(_pair_angles(rng, 4000, 1.5), ref, ref_blocks=blocks,
                                     bins=36)
  assert shifted["tv"] > 5 * shifted["tv_floor_reference"]
  assert shifted["tv"] > 5 * shifted["tv_floor_model"]
  # Finer bins, more noise: the floor grows with the number of bins for the same samples.
  fine = ramachandran_divergences(_pair_angles(rng, 4000, 0.0), ref, ref_blocks=blocks, bins=100)
  assert fine["tv_floor_reference"] > same["tv_floor_reference"]
  # Reweighting: uniform weights change nothing; the model floor uses each half's weights.
  model = _pair_angles(rng, 4000, 0.0)
  plain = ramachandran_divergences(model, ref, ref_blocks=blocks, bins=36)
  uniform = ramachandran_divergences(model, ref, np.full(4000, 3.0), ref_blocks=blocks, bins=36)
  for key in ("tv", "kl", "tv_floor_model", "tv_floor_reference"):
    assert uniform[key] == pytest.approx(plain[key], rel=1e-9), key


def test_split_halves_keeps_blocks_whole():
  blocks = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3])
  a, b = split_halves(9, blocks)
  assert set(blocks[a]) == {0, 2} and set(blocks[b]) == {1, 3}
  assert sorted(np.concatenate([a, b]).tolist()) == list(range(9))
  a, b = split_halves(9)  # no blocks: first and second half, equal sizes
  assert a.tolist() == [0, 1, 2, 3] and b.tolist() == [4, 5, 6, 7]
  a, b = split_halves(4, np.zeros(4))  # one block only: halves of the rows
  assert a.tolist() == [0, 1] and b.tolist() == [2, 3]


def test_molecular_figures_of_a_compact_reference(aldp):
  """Ramachandran and energy figures from every frame's angles and energies; EUBO and the
  other forward figures from the coordinates of the subset."""
  top, x0 = aldp
  rng = np.random.default_rng(6)
  m = 300
  x_ref = x0 + 0.01 * rng.normal(size=(m, x0.shape[1]))
  e_ref = rng.normal(size=m) * 10.0 - 50.0
  log_p_ref = -e_ref / 2.5
  log_q_ref = log_p_ref - 0.3
  args = (x_ref, np.zeros(m), e_ref, x_ref, log_p_ref, log_q_ref, e_ref, top)
  plain = molecular_figures(*args)
  angles = backbone_angles(x_ref, top)
  same = molecular_figures(*args, ref_angles_all=angles, e_ref_all=e_ref)
  for key in ("ramachandran_tv", "ramachandran_tv_36", "energy_w1", "eubo", "forward_ess"):
    assert same[key] == pytest.approx(plain[key]), key
  # All frames elsewhere (angles shifted by 1 rad, energies by 20 kJ/mol): the histogram and
  # energy figures see them, the forward figures (subset coordinates) do not.
  far = molecular_figures(*args, ref_angles_all=np.angle(np.exp(1j * (angles + 1.0))),
                          e_ref_all=e_ref + 20.0, ref_blocks=np.arange(m) % 4)
  assert far["ramachandran_tv"] > 0.9 and far["energy_w1"] == pytest.approx(20.0, rel=1e-6)
  assert far["energy_w1_capped"] == pytest.approx(20.0, rel=1e-6)  # nothing above the cap
  assert far["eubo"] == pytest.approx(plain["eubo"])
