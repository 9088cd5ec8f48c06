"""Sampling building blocks: batched HMC, annealed importance sampling, the replay buffer."""

from cmtjax.sampling.ais import (SPACINGS, AISResult, adapt_step_sizes, ais, ais_betas,
                                 ais_target_evals, log_z_of_p)
from cmtjax.sampling.buffer import (ReplayBuffer, buffer_add, buffer_adjust, buffer_init,
                                    buffer_sample)
from cmtjax.sampling.hmc import HMCInfo, Point, hmc_step, make_point_fn

__all__ = ["AISResult", "HMCInfo", "Point", "ReplayBuffer", "SPACINGS", "adapt_step_sizes",
           "ais", "ais_betas", "ais_target_evals", "buffer_add", "buffer_adjust",
           "buffer_init", "buffer_sample", "hmc_step", "log_z_of_p", "make_point_fn"]
