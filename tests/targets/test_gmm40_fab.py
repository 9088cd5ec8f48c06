"""The published GMM-40 (FAB / TA-BG / iDEM): shipped means against the recipe that made them."""

import math

import numpy as np
import pytest

from cmtjax.targets import make_target
from cmtjax.targets.gmm import FAB_GMM40_SCALE, fab_gmm40_means


def _mt19937_uint32(seed: int, n: int) -> np.ndarray:
  """The first n raw 32-bit outputs of MT19937 seeded by init_genrand(seed), written out."""
  mt = [0] * 624
  mt[0] = seed & 0xFFFFFFFF
  for i in range(1, 624):
    mt[i] = (1812433253 * (mt[i - 1] ^ (mt[i - 1] >> 30)) + i) & 0xFFFFFFFF
  out, idx = [], 624
  for _ in range(n):
    if idx >= 624:
      for i in range(624):
        y = (mt[i] & 0x80000000) | (mt[(i + 1) % 624] & 0x7FFFFFFF)
        mt[i] = mt[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
      idx = 0
    y = mt[idx]
    idx += 1
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    out.append(y)
  return np.asarray(out, np.uint64)


def _recipe_means() -> np.ndarray:
  """torch.manual_seed(0); (torch.rand(40, 2) - 0.5) * 2 * 40, in float32, without torch."""
  raw = _mt19937_uint32(0, 80)
  u = ((raw & 0xFFFFFF).astype(np.float64) * 2.0**-24).astype(np.float32)
  return ((u - np.float32(0.5)) * np.float32(2) * np.float32(40)).reshape(40, 2)


def test_the_generator_matches_numpys_legacy_mt19937_and_the_published_first_values():
  raw = _mt19937_uint32(0, 80)
  np.testing.assert_array_equal(
      raw, np.random.RandomState(0).randint(0, 2**32, size=80, dtype=np.uint32))
  u = (raw[:6] & 0xFFFFFF) * 2.0**-24
  np.testing.assert_allclose(u, [0.4963, 0.7682, 0.0885, 0.1320, 0.3074, 0.6341], atol=5e-5)


def test_shipped_means_are_the_recipe_bit_for_bit():
  np.testing.assert_array_equal(fab_gmm40_means(), _recipe_means())


def test_gmm40_fab_target():
  t = make_target("gmm40_fab")
  assert t.name == "gmm40_fab" and t.dim == 2 and t.log_Z == 0.0 and t.n_modes == 40
  np.testing.assert_array_equal(np.asarray(t.mode_centres), _recipe_means())
  assert FAB_GMM40_SCALE == pytest.approx(math.log1p(math.e), abs=1e-7)
  # Density at a mean: 1/40 of N(0, s² I) at its centre (the others are far away) ...
  m = np.asarray(t.mode_centres)
  lp = float(t.log_prob(m[:1])[0])
  assert lp == pytest.approx(-math.log(40) - math.log(2 * math.pi * FAB_GMM40_SCALE**2),
                             abs=1e-3)
  # ... and the per-dimension std of exact samples of one component is softplus(1).
  import jax
  x = np.asarray(t.sample(jax.random.PRNGKey(1), 200_000))
  idx = np.asarray(t.assign_modes(x))
  x0 = x[idx == 0] - m[0]
  assert x0.std(axis=0) == pytest.approx([FAB_GMM40_SCALE] * 2, rel=0.03)
  with pytest.raises(ValueError, match="unknown keyword"):
    make_target("gmm40_fab", seed=1)
