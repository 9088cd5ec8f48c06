"""Per-target defaults: the flow scale and budget that suit each built-in target.

A preset is a config layer applied before the user's file and overrides, so every value
here can be changed. The GMM-40 preset is the README's demo (CMT.md §3b): an RQ-spline
flow whose base N(0, 20² I) covers the box of means, ε_tr = 0.3, ε_ent = 0.5, K = 100, a
buffer of N = 1e5 while annealing and N = 1e4 at the target, 1.5e6 target evaluations.
"""

from __future__ import annotations

_MOLECULE_CPU = {
    "flow": {"coordinates": "internal", "n_layers": 8, "n_bins": 8, "hidden": [128, 128]},
    "cmt": {"eps_tr": 0.3, "eps_ent": 1.0, "n_samples": 100_000, "n_grad_steps": 100,
            "batch_size": 512, "learning_rate": 1e-3, "final_learning_rate": 1e-5},
    "eval": {"n_samples": 100_000, "n_repeats": 3, "every": 10, "n_samples_during": 10_000,
             "chunk": 20_000},
    # Baselines on the same flow (CMT.md §6): reverse KL drops the 40 highest energies of each
    # batch; FAB's HMC starts from a step size suited to stiff bonds (nm) and adapts it.
    "reverse_kl": {"batch_size": 1024, "n_grad_steps": 20, "learning_rate": 5e-4,
                   "drop_top": 40},
    "fab": {"init_step_size": 1e-3},
    "tabg": {"n_samples": 100_000, "buffer_size": 50_000, "n_grad_steps": 100,
             "batch_size": 512},
    # The SMC baseline: annealing from the initial flow takes ~15 rounds whatever N, so
    # N = 2000 with 2 HMC steps of 10 leapfrog steps (46,000 evaluations a round) anneals
    # within 7e5 evaluations and spends the rest of a 2e6 budget on moves at the target
    # (N = 500 collapsed onto one basin).
    "smc": {"n_particles": 2000, "n_mcmc_steps": 2, "n_leapfrog": 10},
}


def _planned_peptide(anneal_evals: float, max_target_evals: int, cmt: dict | None = None,
                     **sections) -> dict:
  """The molecular CPU preset with budget planning: the annealing within ``anneal_evals``
  target evaluations (at most 80 % of a smaller budget), then the learning rate's decay at the
  target with the trust region kept, for the rest of the budget. ``cmt`` adds CMT settings;
  ``sections`` replace whole sections of the preset (e.g. ``flow=...``)."""
  return _MOLECULE_CPU | {"cmt": _MOLECULE_CPU["cmt"] | {
      "plan_budget": True, "plan_anneal_evals": int(anneal_evals), "refine_fraction": 0.2,
      "stop_adapting_at_target": False} | (cmt or {}),
      "max_target_evals": max_target_evals} | sections


# GMM-40 (the README demo): 32 bins with 2×64 conditioners (24 bins with 2×128 reached a
# lower ESS at twice the time per step). While annealing the buffer holds N = 1e5 samples:
# the broad first flows put only ~1 of 1e4 samples on a remote corner mode, and a mode that a
# buffer misses is lost for good (docs/coverage.md); at the target N = 1e4 refines the flow.
_GMM40 = {
    "flow": {"base_scale": 20.0, "box": 4.0, "n_layers": 8, "n_bins": 32, "hidden": [64, 64]},
    "cmt": {"eps_tr": 0.3, "eps_ent": 0.5, "n_samples": 10_000, "n_samples_annealing": 100_000,
            "n_grad_steps": 100, "batch_size": 1024, "learning_rate": 1e-3,
            "final_learning_rate": 1e-5},
    "reverse_kl": {"batch_size": 1024, "n_grad_steps": 100, "learning_rate": 1e-3},
    # Baselines: components have unit std, so HMC starts at ε = 1 (then adapts);
    # TA-BG draws N = 1e4 per step and fits K = 100 steps, as CMT does.
    "fab": {"init_step_size": 1.0},
    "tabg": {"n_samples": 10_000, "n_grad_steps": 100, "buffer_size": 10_000,
             "batch_size": 1024},
    "max_target_evals": 1_500_000,
}

PRESETS: dict[str, dict] = {
    "gmm40": _GMM40,
    # FAB's published GMM-40 (std softplus(1), fixed means): the same settings.
    "gmm40_fab": _GMM40,
    "gmm40_50d": {
        "flow": {"base_scale": 20.0, "box": 4.0},
        "max_target_evals": 5_000_000,
    },
    # GMM-16 (docs/ablation.md, docs/coverage.md): N = 5e4 at the target, since with N = 1e4
    # the K = 100 fit steps overfit each buffer in 10-D and CMT lost modes (12-13 of 16);
    # N = 1e5 while annealing (about 40 steps), where a buffer that misses a basin loses it.
    # base_scale 18, not 12: on some layouts a mean lies ~1.45x the base's typical radius
    # 12*sqrt(d) from the origin, and the geometric path starves that mode (docs/coverage.md).
    "gmm16": {
        "flow": {"base_scale": 18.0, "box": 4.0, "n_layers": 6, "n_bins": 8,
                 "hidden": [64, 64], "permutation": "random"},
        "cmt": {"eps_tr": 0.3, "eps_ent": 1.0, "n_samples": 50_000,
                "n_samples_annealing": 100_000},
        "max_target_evals": 5_000_000,
    },
    "many_well32": {
        "flow": {"base_scale": 2.0, "box": 4.0, "n_layers": 8, "n_bins": 16,
                 "hidden": [64, 64], "permutation": "random"},
        # N = 1e5: with N = 1e4 the K = 100 fit steps (10 epochs of the buffer) overfit in
        # 32-D and the flow contracted faster than the path (ESS 0 at 2e5 evaluations);
        # with N = 1e5, ESS 0.91 and |log Z error| 3e-5 at 5e6 evaluations (seed 0).
        "cmt": {"eps_tr": 0.3, "eps_ent": 1.0, "n_samples": 100_000, "n_grad_steps": 100},
        "fab": {"init_step_size": 0.1},
        "tabg": {"n_samples": 10_000, "n_grad_steps": 100, "buffer_size": 10_000,
                 "batch_size": 1024},
        "max_target_evals": 5_000_000,
    },
    # Molecules (internal-coordinate flows, chosen automatically). Alanine dipeptide: the
    # CPU-scale run of docs/molecules.md (about an hour on 2 CPU cores). N = 1e5: with N = 1e4
    # the fit dropped the flow's entropy 2-4x faster than the bound asked for and the flow
    # ended up too narrow (bond and angle spreads 0.7x the reference's).
    # Budget planning anneals within 1.65e6 evaluations (15 % of the budget; the target at step
    # 16; at 2e6 it keeps 1.6e6, not 15 %, since the path needs as many steps), then 94 steps
    # refine at the target with the trust region still solved (stop_adapting_at_target =
    # false): with it switched off, buffers of step ESS 0.008 were fitted at lr 1e-3 and the
    # phi > 0 basin was lost (ESS 0.82, forward ESS 8e-25); with it, seed 0 reached reverse ESS
    # 0.812, forward ESS 0.65 and phi > 0 0.022 (reference 0.0236) in 37 min on 2 cores
    # (docs/molecules.md). 16 coupling layers, not 8: at the same budget seeds 0-2 reached
    # reverse ESS 0.854 / 0.853 / 0.847 (8 layers: 0.812 / 0.818 / 0.807), forward ESS without
    # the top frame 0.86 on each, in 43-45 min on 2 cores beside other work (sampling and
    # energies do not grow with the layers). The baseline comparisons of docs/baselines.md
    # were measured with 8 layers (--set flow.n_layers=8 repeats them). Fit weights capped at
    # 100x the uniform share 1/N: seed 1 without it lost the cis Ala-Nme isomer on one
    # heavy-weight step at the target (forward ESS 2e-12); with it, seeds 0 / 1 / 2 from the
    # start read reverse ESS 0.856 / 0.849 / 0.853 and forward ESS 0.869 / 0.858 / 0.861
    # (plain 0.854 / 0.853 / 0.847 and 0.860 / 2e-12 / 0.807; docs/molecules.md).
    "aldp": _planned_peptide(1.65e6, 11_000_000, cmt={"fit_weight_cap": 100.0},
                             flow=_MOLECULE_CPU["flow"] | {"n_layers": 16}),
    # Alanine tetrapeptide: the aldp recipe with 5.5e6 evaluations (half the budget) for the
    # annealing (the path needs ~55 steps here, aldp 16), then the learning rate's decay with
    # the trust region kept. Seed 0 at 1.1e7 (77 min on 2 cores, ~40 s a step): reverse ESS
    # 0.049, every residue pair's Ramachandran TV within 1.1-1.4x the reference's noise, but
    # phi > 0 at a tenth of the reference or less on every residue (so was the first run's: 6e6, 80 %
    # annealing, constant learning rate, ESS 0.008; docs/molecules.md). Not yet good enough:
    # 30 more steps at lr 3e-4 did not raise the ESS, nor did 2x256 conditioners; the per-step
    # phi > 0 trace shows the basin lost during the annealing ("Third round" in the docs).
    # Annealing at lr 3e-4 with the eps scale capped at 2 (1.4e7) kept it far longer but not to
    # the end (ESS 0.031): the flow's phi > 0 samples sit 22-33 kJ/mol above its main basin,
    # against 7-9 in the reference ("Fourth round"). From this run's flow, K = 400 fit steps
    # per step (fit KL ~0) left the ESS at 0.050 and a reverse-KL polish lowered it to 0.023
    # ("Fifth round"): the log-weights' robust spread is 1.2-1.6 nats here, 0.36 on aldp.
    "ala4": _planned_peptide(5.5e6, 11_000_000),
    # The larger peptides: the ala4 recipe (planned annealing within half the budget, then the
    # learning rate's decay with the trust region kept), with budgets for about two hours on 2
    # CPU cores at N = 1e5 per step (ala6's 180 coordinates: ~45-50 s a step measured on its
    # first run; elil's 219: ~75 s estimated from ala4's ~40 s at 120). ala6 seed 0 (110 steps,
    # 2.1 h): not at the target (lambda ~3 at the end), reverse ESS 4e-5, no chirality errors
    # (docs/molecules.md). elil measured ~38 s a step alone on 2 cores (a first start at 9e6
    # evaluations would have taken one hour), so its budget is 1.4e7 (~1.5 h), half of it for
    # the annealing. elil seed 0 (140 steps, 80.5 min): not at the target (lambda ~3.7 at the
    # end), reverse ESS 1e-4, no chirality errors (docs/molecules.md). Paper-scale configs:
    # experiments/molecules/configs/.
    "ala6": _planned_peptide(5.5e6, 11_000_000),
    "elil": _planned_peptide(7e6, 14_000_000),
    "double_well2d": {
        "flow": {"base_scale": 2.0, "box": 4.0, "n_layers": 6, "n_bins": 16},
        "max_target_evals": 500_000,
    },
}


# A molecule from a PDB file (``--target my.pdb``): the alanine-dipeptide settings, a budget
# for a small peptide; for a larger molecule, raise max_target_evals.
MOLECULE_FROM_PDB = _MOLECULE_CPU | {"max_target_evals": 10_000_000}


def preset_for(target: str) -> dict:
  """The preset layer of ``target`` (a PDB file gets :data:`MOLECULE_FROM_PDB`; a Python
  factory, like any target without a preset, none)."""
  if target.lower().endswith(".pdb"):
    return MOLECULE_FROM_PDB
  return PRESETS.get(target, {})
