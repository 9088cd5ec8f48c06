"""Sampling building blocks: batched HMC, annealed importance sampling, the replay buffer,
resampling and temperature ladders. Names are exported lazily (importing the package imports
no jax)."""

from __future__ import annotations

from cmtjax._lazy import lazy_exports

_EXPORTS = {
    **{n: "ais" for n in ("SPACINGS", "AISResult", "adapt_step_sizes", "ais", "ais_betas",
                          "ais_target_evals", "log_z_of_p")},
    **{n: "buffer" for n in ("ReplayBuffer", "buffer_add", "buffer_adjust", "buffer_init",
                             "buffer_sample")},
    **{n: "hmc" for n in ("HMCInfo", "Point", "hmc_step", "make_point_fn")},
    **{n: "langevin" for n in ("Langevin", "LangevinState", "make_langevin")},
    **{n: "replica_exchange" for n in (
        "ReplicaExchange", "ReplicaExchangeFrames", "ReplicaExchangeResult",
        "ReplicaExchangeState", "SwapResult", "make_replica_exchange", "swap_neighbours")},
    "chunk_sizes": "chunks", "draw_in_chunks": "chunks", "map_in_chunks": "chunks",
    "cumulative_weights": "resampling", "resample_indices": "resampling",
    "geometric_ladder": "temperatures",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
