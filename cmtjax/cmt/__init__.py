"""The CMT step's mathematics: buffer, dual, jitted solver, paths and their bookkeeping."""

from cmtjax.cmt.dual import (Buffer, DualStats, dual_stats, dual_value, entropy_estimate,
                             lam_for_min_ess, log_weights, make_buffer, normalised_log_weights)
from cmtjax.cmt.paths import PATHS, PathState, init_path, path_constraints, update_path
from cmtjax.cmt.solver import DualSolution, SolverConfig, solve_dual

__all__ = [
    "Buffer", "DualSolution", "DualStats", "PATHS", "PathState", "SolverConfig", "dual_stats",
    "dual_value", "entropy_estimate", "init_path", "lam_for_min_ess", "log_weights",
    "make_buffer", "normalised_log_weights", "path_constraints", "solve_dual", "update_path",
]
