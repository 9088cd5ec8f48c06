"""cmtjax: Boltzmann generators trained by Constrained Mass Transport, in JAX.

Layout (one folder per concern):
  flows/    normalizing flows as pure functions over a params pytree
  targets/  the Target protocol, synthetic targets, molecules/
  cmt/      the CMT dual, its jitted solver, the four paths and their bookkeeping
  methods/  CMT and the baselines, each a Method for the one loop
  train/    the loop, the method interface, weighted forward-KL fitting
  metrics/  ESS, evidence bounds, mode coverage, evaluate()
  io/       configs, presets, plots, samples files, reference generation
  api.py    the Python API: fit(target, CMT(...), budget=...), load_run(DIR)
  runner.py one run end to end (what `cmtjax train` and fit() call)
"""

__version__ = "0.1.0"

from cmtjax._lazy import lazy_exports  # noqa: E402

# Exported lazily (PEP 562): `import cmtjax` and `cmtjax --help` import no jax.
_EXPORTS = {
    "DualSolution": "cmt", "SolverConfig": "cmt", "make_buffer": "cmt", "solve_dual": "cmt",
    "Flow": "flows", "FlowConfig": "flows", "make_flow": "flows",
    "CMTConfig": "methods", "ReverseKLConfig": "methods", "make_method": "methods",
    "Target": "targets", "make_target": "targets",
    "Method": "train", "TrainState": "train", "train": "train",
    "CMT": "api", "FAB": "api", "ForwardKL": "api", "ReverseKL": "api", "SMC": "api",
    "TABG": "api",
    "Run": "api", "fit": "api", "load_run": "api", "method": "api",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["__version__", *_EXPORTS]
