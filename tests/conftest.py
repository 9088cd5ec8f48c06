"""Session-wide test settings.

XLA's backend optimisation level 1 (not 2, the default) for every test process and the
subprocesses it starts (the variable is inherited): most tests compile far more than they
compute, and level 1 compiles ~25 % faster while a compute-heavy test (the GMM-40 end-to-end
run) ran as fast. Level 0 compiled faster still but ran that test 2.4x slower. A test or a
shell that sets the level itself keeps its own.

JAX's x64 mode is process-wide: a float64 molecule built through the runner, or a float64
reference generation, turns it on for the rest of the process (cmtjax.runner.build_target).
Under pytest-xdist one worker runs many tests, so a test that leaves x64 on would make every
later test of that worker run in float64, slower and not as written. Each test here starts
with x64 as the session began and gets it back afterwards.
"""

from __future__ import annotations

import os

import jax
import pytest

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=1").strip()

_X64_AT_START = bool(jax.config.jax_enable_x64)


@pytest.fixture(autouse=True)
def _restore_x64():
  yield
  if bool(jax.config.jax_enable_x64) != _X64_AT_START:
    jax.config.update("jax_enable_x64", _X64_AT_START)
