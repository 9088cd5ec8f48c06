"""Adaptive tempered SMC: the non-ML baseline at the same budget of target evaluations.

Sequential Monte Carlo from the prior to the target along the same geometric path that CMT
anneals on, π_β ∝ q₀^(1-β) p̃^β, with q₀ the initial (untrained) flow. It runs on blackjax:
``blackjax.adaptive_tempered_smc`` picks each next β so that the particles' ESS drops to
``target_ess`` of N, resamples systematically, and moves every particle with
``n_mcmc_steps`` HMC steps (blackjax's HMC kernel, ``n_leapfrog`` leapfrog steps each).

The particles live in the flow's base space (z, the standardised internal coordinates of a
molecule): the prior is the base density, and the log-likelihood is
ℓ(z) = log p̃(T₀(z)) + log|det ∂T₀/∂z| − log base(z), so that base(z)·e^ℓ(z) is the target
pulled back through the initial flow T₀ and q₀^(1-β) p̃^β is the path CMT follows. Periodic
base coordinates (free dihedrals) are wrapped with ``flow.base_wrap`` before they are used.
The initial flow's couplings are the identity, so T₀ is the flow's fixed map alone
(``flow.initial_forward``: for a molecule, the internal-coordinate map) and SMC evaluates
that, not the coupling layers (``pull_back = "initial"``, the default; on alanine dipeptide
with the 16-layer preset a round at N = 2000 is then 9× cheaper, its compilation 3×;
``benchmarks/smc_round.py``). A run that starts from trained parameters (``init_params``) and
wants the target pulled back through that flow sets ``pull_back = "flow"`` (a forward and
backward pass of the flow per leapfrog step); ``"initial"`` refuses parameters that are not
the initial ones rather than ignore them.

After each step the HMC step size follows the acceptance rate towards
``target_acceptance`` and the diagonal inverse mass matrix is set to the particles' weighted
variance per coordinate (stiff bonds and soft dihedrals then move at matched speeds). Once
β = 1 the remaining budget goes to further resample-and-move rounds at the target.

Target evaluations are counted as blackjax makes them: per round, N for the ESS solver (while
β < 1), N for initialising the HMC states (value and gradient), N · n_mcmc_steps · n_leapfrog
for the leapfrog steps, and N for the new weights — every log p̃ or gradient evaluation, the
same rule as for the flow methods (``tests/methods/test_smc.py`` counts them).

The method plugs into the one training loop (progress, budget, checkpoints); its result is a
weighted particle set rather than a flow, which :attr:`Method.particles` hands to the
runner's particle evaluation (``cmtjax.metrics.evaluate_particles``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from cmtjax.methods.registry import MethodSpec
from cmtjax.targets.base import Target
from cmtjax.train.state import Method, TrainState

Array = jax.Array

# A log-likelihood below this is treated as "no mass" (a clash, a point outside the base's
# support, a NaN energy): finite, so that β·ℓ stays defined at β = 0.
_LOG_LIK_FLOOR = -1e30

PULL_BACKS = ("initial", "flow")

# How far (nm for a molecule, x units otherwise; and in log |det|) the flow at the run's
# parameters may differ from its initial map on the first particles for ``pull_back =
# "initial"`` to accept them as the initial parameters (float32 rounding of the dihedral
# rotations stays far below).
_INITIAL_ATOL = 1e-4


@dataclasses.dataclass(frozen=True)
class SMCConfig:
  """Hyperparameters of adaptive tempered SMC.

  Attributes:
    n_particles: N, particles carried along the path.
    target_ess: each new β makes the particles' ESS this fraction of N.
    n_mcmc_steps: HMC steps per particle per round.
    n_leapfrog: leapfrog steps per HMC step.
    init_step_size: first HMC step size, in units of the particles' standard deviation
      (the inverse mass matrix is their variance).
    target_acceptance: the acceptance rate the step size is adapted towards.
    adapt_mass: set the diagonal inverse mass matrix to the particles' weighted variance
      after every round (False: the identity).
    pull_back: the map T₀ the target is pulled back through: ``"initial"``, the flow at its
      initialisation, evaluated as its fixed map alone (``Flow.initial_forward``); or
      ``"flow"``, the flow at the run's parameters (e.g. trained ones from ``init_params``).
  """

  n_particles: int = 2000
  target_ess: float = 0.5
  n_mcmc_steps: int = 5
  n_leapfrog: int = 10
  init_step_size: float = 0.3
  target_acceptance: float = 0.65
  adapt_mass: bool = True
  pull_back: str = "initial"

  def __post_init__(self):
    if self.n_particles < 2:
      raise ValueError(f"smc.n_particles must be >= 2, got {self.n_particles}")
    if not 0.0 < self.target_ess < 1.0:
      raise ValueError(f"smc.target_ess must be in (0, 1), got {self.target_ess}")
    if self.n_mcmc_steps < 1 or self.n_leapfrog < 1:
      raise ValueError("smc.n_mcmc_steps and smc.n_leapfrog must be >= 1")
    if not self.init_step_size > 0:
      raise ValueError(f"smc.init_step_size must be > 0, got {self.init_step_size}")
    if not 0.0 < self.target_acceptance < 1.0:
      raise ValueError(f"smc.target_acceptance must be in (0, 1), got "
                       f"{self.target_acceptance}")
    if self.pull_back not in PULL_BACKS:
      raise ValueError(f"smc.pull_back must be one of {PULL_BACKS}, got {self.pull_back!r}")

  @property
  def evals_per_move(self) -> int:
    """Evaluations of one resample-and-move round at the target (no ESS solve):
    N · (2 + n_mcmc_steps · n_leapfrog)."""
    return int(self.n_particles) * (2 + int(self.n_mcmc_steps) * int(self.n_leapfrog))

  @property
  def evals_per_step(self) -> int:
    """Evaluations of one round at the end of a run (at β = 1; a round with β < 1 costs N
    more, for the ESS solver)."""
    return self.evals_per_move


class SMCMethodState(NamedTuple):
  """What SMC carries between rounds (``TrainState.method_state``).

  Attributes:
    particles: [N, d] positions in the flow's base space (periodic coordinates wrapped).
    weights: [N] normalised weights.
    beta: current inverse temperature of the path.
    log_z: running estimate of log Z (sum of the rounds' log normalising-constant ratios).
    step_size: HMC step size.
    inv_mass: [d] diagonal inverse mass matrix.
  """

  particles: Array
  weights: Array
  beta: Array
  log_z: Array
  step_size: Array
  inv_mass: Array


class SMCInfo(NamedTuple):
  """Diagnostics of one round.

  Attributes:
    beta: β after the round.
    log_z: log Z estimate after the round.
    ess: ESS of the new weights as a fraction of N.
    acceptance: mean HMC acceptance rate of the round.
    step_size: the step size the round used.
    n_zero_weight: particles left with weight 0 (a log-likelihood that was not finite, or
      negligible against the others').
    round_evals: target evaluations of the round.
  """

  beta: Array
  log_z: Array
  ess: Array
  acceptance: Array
  step_size: Array
  n_zero_weight: Array
  round_evals: Array


def _weighted_variance(z: Array, w: Array) -> Array:
  mean = jnp.sum(w[:, None] * z, 0)
  return jnp.sum(w[:, None] * (z - mean) ** 2, 0)


def make_smc(config: SMCConfig, flow, target: Target, n_steps: int,
             max_target_evals: Optional[int] = None) -> Method:
  """Builds the SMC baseline (see module docstring)."""
  import blackjax  # noqa: PLC0415 - only this method needs it
  from blackjax.smc import adaptive_tempered, resampling, tempered

  if flow.base_sample is None or flow.base_log_prob is None or flow.base_wrap is None:
    raise ValueError("method 'smc' moves particles in the flow's base space: the flow must "
                     "provide base_sample, base_log_prob and base_wrap")
  initial = config.pull_back == "initial"
  if initial and flow.initial_forward is None:
    raise ValueError("smc.pull_back = 'initial' needs the flow's parameter-free initial map "
                     "(Flow.initial_forward), which this flow does not provide: set "
                     "smc.pull_back = 'flow'")
  n = int(config.n_particles)
  per_round = n * (3 + int(config.n_mcmc_steps) * int(config.n_leapfrog))

  def push(params, z):
    """T₀(z) and log |det ∂T₀/∂z| for base points z: [batch, d] (wrapped)."""
    return flow.initial_forward(z) if initial else flow.forward(params, z)

  def check_initial(params, z):
    """Refuses, for ``pull_back = "initial"``, parameters at which the flow is not its
    initial map (checked on the first particles; skipped under a trace)."""
    if not initial or any(isinstance(a, jax.core.Tracer)
                          for a in jax.tree_util.tree_leaves(params)):
      return
    zw = flow.base_wrap(z[:64])
    x, log_det = flow.forward(params, zw)
    x0, log_det0 = flow.initial_forward(zw)
    dx = float(jnp.max(jnp.abs(x - x0)))
    dld = float(jnp.max(jnp.abs(log_det - log_det0)))
    if not (dx <= _INITIAL_ATOL and dld <= 10 * _INITIAL_ATOL):
      raise ValueError(
          "smc.pull_back = 'initial' pulls the target back through the untrained flow, but "
          f"this run's flow parameters are not its initial ones (max |x - T0(z)| = {dx:.3g}, "
          f"log-det difference {dld:.3g}; from init_params?): set smc.pull_back = 'flow' "
          "to pull it back through these parameters")

  def pulled_back(params):
    """(log prior, log-likelihood) of one base point z: [d] under T₀."""
    def log_prior(z):
      return flow.base_log_prob(flow.base_wrap(z)[None])[0]

    def log_lik(z):
      zw = flow.base_wrap(z)[None]
      lp0 = flow.base_log_prob(zw)[0]
      x, log_det = push(params, zw)
      ll = target.log_prob(x)[0] + log_det[0] - lp0
      ok = jnp.isfinite(ll) & jnp.isfinite(lp0)
      return jnp.where(ok, jnp.maximum(ll, _LOG_LIK_FLOOR), _LOG_LIK_FLOOR)
    return log_prior, log_lik

  hmc_kernel = blackjax.hmc.build_kernel()
  mcmc_step = functools.partial(hmc_kernel, num_integration_steps=int(config.n_leapfrog))

  def init(key: Array, params) -> TrainState:
    z = flow.base_sample(key, n)
    check_initial(params, z)
    w = jnp.full((n,), 1.0 / n, jnp.float32)
    inv_mass = (jnp.maximum(_weighted_variance(z, w), 1e-8) if config.adapt_mass
                else jnp.ones(z.shape[1], jnp.float32))
    ms = SMCMethodState(particles=z, weights=w, beta=jnp.zeros((), jnp.float32),
                        log_z=jnp.zeros((), jnp.float32),
                        step_size=jnp.asarray(config.init_step_size, jnp.float32),
                        inv_mass=inv_mass)
    return TrainState(params=params, opt_state=(), method_state=ms,
                      step=jnp.zeros((), jnp.int32))

  def step(key: Array, state: TrainState):
    ms = state.method_state
    log_prior, log_lik = pulled_back(state.params)
    mcmc_params = {"step_size": ms.step_size[None], "inverse_mass_matrix": ms.inv_mass[None]}
    smc_state = tempered.TemperedSMCState(ms.particles, ms.weights, ms.beta)
    common = dict(logprior_fn=log_prior, loglikelihood_fn=log_lik, mcmc_step_fn=mcmc_step,
                  mcmc_init_fn=blackjax.hmc.init, resampling_fn=resampling.systematic)

    def annealing(s):
      kernel = adaptive_tempered.build_kernel(target_ess=config.target_ess, **common)
      return kernel(key, s, config.n_mcmc_steps, mcmc_params)

    def at_target(s):  # β = 1: resample and move only (δ = 0, no ESS solve)
      kernel = tempered.build_kernel(**common)
      return kernel(key, s, config.n_mcmc_steps, jnp.ones((), jnp.float32), mcmc_params)

    new, info = jax.lax.cond(ms.beta < 1.0, annealing, at_target, smc_state)
    # Periodic coordinates back into their period: the particles stay in one copy of the
    # base space, and their variance (the mass matrix) is not inflated by whole periods.
    particles = flow.base_wrap(new.particles)
    acceptance = jnp.mean(info.update_info.acceptance_rate)
    factor = jnp.exp(acceptance - config.target_acceptance)  # in [0.52, 1.42]
    inv_mass = ms.inv_mass
    if config.adapt_mass:
      inv_mass = jnp.maximum(_weighted_variance(particles, new.weights), 1e-8)
    beta = jnp.minimum(jnp.asarray(new.tempering_param, jnp.float32), 1.0)
    log_z = ms.log_z + info.log_likelihood_increment
    round_evals = jnp.where(ms.beta < 1.0, per_round, config.evals_per_move)
    out = SMCMethodState(particles=particles, weights=new.weights, beta=beta,
                         log_z=log_z, step_size=ms.step_size * factor, inv_mass=inv_mass)
    smc_info = SMCInfo(beta=beta, log_z=log_z, ess=1.0 / jnp.sum(new.weights ** 2) / n,
                       acceptance=acceptance, step_size=ms.step_size,
                       n_zero_weight=jnp.sum(new.weights <= 0.0).astype(jnp.int32),
                       round_evals=round_evals.astype(jnp.int32))
    return state.next(state.params, state.opt_state, out), smc_info

  def step_evals(state: TrainState) -> int:
    return per_round if float(state.method_state.beta) < 1.0 else config.evals_per_move

  def particles(state: TrainState):
    """(x [N, dim], log w [N], log Z) of the particle set."""
    ms = state.method_state
    x, _ = push(state.params, ms.particles)
    return x, jnp.log(ms.weights), ms.log_z

  return Method(name="smc", init=init, step=step, evals_per_step=config.evals_per_step,
                grad_steps_per_step=0, n_steps=int(n_steps), step_evals=step_evals,
                max_target_evals=max_target_evals, particles=particles)


def _summary(records: list, config: SMCConfig, target) -> dict:
  """SMC's own figures for metrics.json: the path's length and the sampler's health."""
  del config, target
  betas = [r.get("beta") for r in records]
  reached = next((i for i, b in enumerate(betas) if b is not None and b >= 1.0), None)
  acc = [r["acceptance"] for r in records if r.get("acceptance") is not None]
  return {"target_reached_at_step": reached,
          # The particles' ESS on arrival at β = 1 (later rounds resample and move at the
          # target, so the final weights are uniform and the final particle ESS is 1).
          "smc_ess_at_target": records[reached].get("ess") if reached is not None else None,
          "smc_rounds_annealing": (reached + 1) if reached is not None else len(records),
          "smc_mean_acceptance": sum(acc) / len(acc) if acc else None,
          "smc_final_step_size": records[-1].get("step_size") if records else None}


def _plot(out_dir: str, records: list, config: SMCConfig, title: str) -> None:
  """``training.png``: β, the particles' ESS and the HMC acceptance rate per round."""
  del config
  import os  # noqa: PLC0415
  from cmtjax.io import plots  # noqa: PLC0415
  plots.plot_training_curve(os.path.join(out_dir, "training.png"), records,
                            ["beta", "ess", "acceptance"], title=title)


SPEC = MethodSpec(name="smc", config=SMCConfig, make=make_smc, summary=_summary, plot=_plot,
                 particle_method=True)
