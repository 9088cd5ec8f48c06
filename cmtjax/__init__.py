"""cmtjax: Boltzmann generators trained by Constrained Mass Transport, in JAX.

Layout (one folder per concern):
  flows/    normalizing flows as pure functions over a params pytree
  targets/  the Target protocol, synthetic targets, molecules/
  cmt/      the CMT dual, its jitted solver, the four paths and their bookkeeping
  methods/  CMT and the baselines, each a Method for the one loop
  train/    the loop, the method interface, weighted forward-KL fitting
  metrics/  ESS, evidence bounds, mode coverage, evaluate()
  io/       configs, presets, plots
"""

__version__ = "0.1.0"

from cmtjax.cmt import DualSolution, SolverConfig, make_buffer, solve_dual  # noqa: E402
from cmtjax.flows import Flow, FlowConfig, make_flow  # noqa: E402
from cmtjax.methods import CMTConfig, ReverseKLConfig, make_method  # noqa: E402
from cmtjax.targets import Target, make_target  # noqa: E402
from cmtjax.train import Method, TrainState, train  # noqa: E402

__all__ = ["CMTConfig", "DualSolution", "Flow", "FlowConfig", "Method", "ReverseKLConfig",
           "SolverConfig", "Target", "TrainState", "__version__", "make_buffer", "make_flow",
           "make_method", "make_target", "solve_dual", "train"]
