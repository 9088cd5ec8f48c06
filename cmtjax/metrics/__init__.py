"""Metrics: ESS, log Z estimates and evidence bounds, mode coverage, molecular figures
(Ramachandran, energy and torus distances, chirality, cis peptide bonds), and :func:`evaluate`.

Log weights are log w = log p̃(x) - log q(x); ESS is a fraction in [0, 1]; non-finite log
weights are dropped (and counted by :func:`count_nonfinite`).
"""

from __future__ import annotations

from cmtjax.metrics.basins import (
    ALDP_BASINS,
    aldp_basin_populations,
    aldp_basin_populations_by_block,
)
from cmtjax.metrics.checks import run_warnings
from cmtjax.metrics.ess import (forward_ess, forward_ess_without_top, reverse_ess,
                                reverse_ess_clipped, top_log_weight_excess)
from cmtjax.metrics.evaluate import evaluate, evaluate_particles
from cmtjax.metrics.evidence import elbo, eubo, log_z_forward, log_z_reverse
from cmtjax.metrics.modes import (
    mode_occupancy,
    mode_tv,
    modes_covered,
    right_well_fraction,
    well_occupancy_tv,
)
from cmtjax.metrics.molecular import (
    EnergyDistance,
    backbone_angles,
    chirality_error_rate,
    cis_peptide_bonds,
    cis_peptide_shares,
    energy_above_reference,
    energy_distance,
    molecular_figures,
    RAMACHANDRAN_BINS,
    ramachandran_divergences,
    ramachandran_histogram,
    ramachandran_kl,
    ramachandran_tv,
    split_halves,
    split_tv_spread,
    torus_w2,
)
from cmtjax.metrics.weights import count_nonfinite, masked_log_weights, normalised_weights

__all__ = [
    "ALDP_BASINS",
    "EnergyDistance",
    "aldp_basin_populations",
    "aldp_basin_populations_by_block",
    "backbone_angles",
    "chirality_error_rate",
    "cis_peptide_bonds",
    "cis_peptide_shares",
    "count_nonfinite",
    "elbo",
    "energy_above_reference",
    "energy_distance",
    "eubo",
    "evaluate",
    "evaluate_particles",
    "forward_ess",
    "forward_ess_without_top",
    "log_z_forward",
    "log_z_reverse",
    "masked_log_weights",
    "mode_occupancy",
    "mode_tv",
    "modes_covered",
    "molecular_figures",
    "normalised_weights",
    "ramachandran_histogram",
    "RAMACHANDRAN_BINS",
    "ramachandran_divergences",
    "ramachandran_kl",
    "ramachandran_tv",
    "split_halves",
    "split_tv_spread",
    "top_log_weight_excess",
    "reverse_ess",
    "reverse_ess_clipped",
    "right_well_fraction",
    "run_warnings",
    "torus_w2",
    "well_occupancy_tv",
]
