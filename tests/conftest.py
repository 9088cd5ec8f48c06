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

One persistent compilation cache for the session: many tests compile the same programs (the
same tiny CLI run in several tests, a run and its resume in a second process, both processes
of the multi-process test). The first process to run a test session makes an empty folder and
names it in ``JAX_COMPILATION_CACHE_DIR``, which the xdist workers and every subprocess
inherit; it is removed when that process ends, so each session starts cold, as CI does. It
cut tests/io/test_cli.py from 96 to 69 s on 2 cores. ``CMTJAX_TEST_NO_CACHE=1`` turns it off;
a cache folder set outside is kept as it is.

Tests marked ``slow`` (end-to-end runs of half a minute to a few minutes) are collected first.
With ``--maxschedchunk 1`` (``dev.sh test`` passes it) pytest-xdist hands tests out one at a
time in collection order, so the long ones start at once on separate workers instead of one of
them starting last and running alone. Without it xdist sends each worker a contiguous first
chunk, and the slow tests would mostly share one worker.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if (os.environ.get("CMTJAX_TEST_NO_CACHE") != "1"
    and not os.environ.get("JAX_COMPILATION_CACHE_DIR")):
  _CACHE = tempfile.mkdtemp(prefix="cmtjax-test-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
# Programs that compile in under 0.3 s are not worth a disk write.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import jax  # noqa: E402  (after the cache settings, which JAX reads when it is imported)
import pytest  # noqa: E402

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=1").strip()

_X64_AT_START = bool(jax.config.jax_enable_x64)


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: slow first


@pytest.fixture(autouse=True)
def _restore_x64():
  yield
  if bool(jax.config.jax_enable_x64) != _X64_AT_START:
    jax.config.update("jax_enable_x64", _X64_AT_START)
