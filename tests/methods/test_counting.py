"""Every method's static ``evals_per_step`` equals the target evaluations it really makes.

FAB, TA-BG and forward KL are counted in their own tests; here CMT (its fixed schedules
share the adaptive step's sampling) and reverse KL (with top-k dropping) get the same
counting wrapper.
"""

from __future__ import annotations

import jax
import pytest

from cmtjax.methods import CMTConfig, ReverseKLConfig, evals_per_step, make_method
from cmtjax.train import train
from methods_testing import counting, gauss_target, small_flow


@pytest.mark.parametrize("name, cfg", [
    ("cmt", CMTConfig(n_samples=500, n_fit_steps=5, batch_size=64)),
    ("reverse_kl", ReverseKLConfig(batch_size=64, n_grad_steps=4, drop_top=3)),
])
def test_static_cost_matches_the_counted_evaluations(name, cfg):
  target, calls, _ = counting(gauss_target())
  flow = small_flow()
  method = make_method(name, cfg, flow, target, 3)
  assert method.evals_per_step == evals_per_step(name, cfg)
  res = train(method, jax.random.PRNGKey(0), flow.init(jax.random.PRNGKey(1)), progress=False)
  assert calls.value == res.target_evals == 3 * method.evals_per_step
