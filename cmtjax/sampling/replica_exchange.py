"""Replica exchange (parallel tempering) with Langevin MD for the molecular targets.

``n_walkers`` independent walkers, each a ladder of ``n_replicas`` temperatures; all
``n_replicas * n_walkers`` configurations go through the molecule's JAX energy as one batch.
Between swap attempts every configuration moves by BAOAB Langevin dynamics at its slot's
temperature (``cmtjax.sampling.langevin``, one kT per slot). Every ``swap_every`` steps the
neighbouring slots (i, i + 1) of one parity (even pairs, then odd pairs, alternating) exchange
configurations with the Metropolis probability

    min(1, exp[(beta_i - beta_{i+1}) (E_i - E_{i+1})]),

E the potential energy; momenta are rescaled by sqrt(T_new / T_old), which keeps them
Maxwell-Boltzmann at the new temperature and makes the kinetic terms cancel from the criterion.
Each pair move satisfies detailed balance in the product ensemble, so the alternating
composition leaves it invariant. Frames of the coldest slot are saved every ``save_every`` steps
after the burn-in; walkers never interact, so per-walker averages are independent blocks.

This module holds the swap move (``swap_neighbours``), the sampler's pure functions
(``make_replica_exchange``) and a driver that returns the coldest slot's frames
(``replica_exchange``). Writing and reading reference sets is in
``cmtjax.targets.molecules.reference``; basin populations in ``cmtjax.metrics.basins``.

Units: nm, ps, Da, kJ/mol, K.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import time
from typing import TYPE_CHECKING, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from cmtjax.sampling.langevin import LangevinState, make_langevin
from cmtjax.targets.molecules.parameters import MOLAR_GAS_CONSTANT

if TYPE_CHECKING:
  from cmtjax.targets.molecules.systems import MolecularSystem

Array = jax.Array


# ----------------------------------------------------------------------------------------------
# The swap move.


class SwapResult(NamedTuple):
  """One round of neighbour swaps.

  Attributes:
    source: [n_replicas, n_walkers] int: slot r of walker w takes the configuration that was in
      slot ``source[r, w]`` (the identity where nothing was swapped).
    accepted: [n_replicas - 1, n_walkers] bool, pair (i, i + 1) exchanged.
    attempted: [n_replicas - 1] bool, pair (i, i + 1) had an attempt (its parity).
    acceptance_probability: [n_replicas - 1, n_walkers] min(1, exp(log ratio)) of the attempts
      (zero where not attempted).
  """
  source: Array
  accepted: Array
  attempted: Array
  acceptance_probability: Array


def swap_neighbours(key: Array, energies: Array, betas: Array, parity: Array) -> SwapResult:
  """Metropolis exchange of the pairs (i, i + 1) with i % 2 == parity.

  Args:
    key: PRNG key.
    energies: [n_replicas, n_walkers] potential energies (kJ/mol) in the slots.
    betas: [n_replicas] 1 / (k_B T) in mol/kJ of the slots, any order.
    parity: 0 (pairs (0, 1), (2, 3), ...) or 1 (pairs (1, 2), (3, 4), ...).

  Returns:
    The ``SwapResult``.
  """
  n_replicas, n_walkers = energies.shape
  chex.assert_shape(betas, (n_replicas,))
  if n_replicas < 2:
    return SwapResult(
      source=jnp.zeros((1, n_walkers), jnp.int32), accepted=jnp.zeros((0, n_walkers), bool),
      attempted=jnp.zeros((0,), bool), acceptance_probability=jnp.zeros((0, n_walkers)))
  pair = jnp.arange(n_replicas - 1)
  attempted = (pair % 2) == parity
  log_ratio = (betas[:-1, None] - betas[1:, None]) * (energies[:-1] - energies[1:])
  log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
  log_u = jnp.log(jax.random.uniform(key, log_ratio.shape, log_ratio.dtype))
  accepted = attempted[:, None] & (log_u < log_ratio)
  prob = jnp.where(attempted[:, None], jnp.exp(jnp.minimum(log_ratio, 0.0)), 0.0)
  # Pairs of one parity are disjoint, so each slot is in at most one accepted pair.
  slots = jnp.arange(n_replicas)[:, None]
  up = jnp.concatenate([accepted, jnp.zeros((1, n_walkers), bool)])  # slot r swaps with r + 1
  down = jnp.concatenate([jnp.zeros((1, n_walkers), bool), accepted])  # slot r swaps with r - 1
  source = jnp.where(up, slots + 1, jnp.where(down, slots - 1, slots)).astype(jnp.int32)
  return SwapResult(source=source, accepted=accepted, attempted=attempted,
                    acceptance_probability=prob)


# ----------------------------------------------------------------------------------------------
# The sampler.


class ReplicaExchangeState(NamedTuple):
  """State of ``n_walkers`` independent replica ladders.

  Attributes:
    positions: [n_replicas, n_walkers, n_atoms, 3] nm; slot r is at temperatures[r].
    momenta: [n_replicas, n_walkers, n_atoms, 3] Da nm / ps.
    forces: [n_replicas, n_walkers, n_atoms, 3] kJ/mol/nm at ``positions``.
    energies: [n_replicas, n_walkers] kJ/mol at ``positions``.
    label: [n_replicas, n_walkers] int32, travels with the configuration: +1 if it last visited
      the coldest slot, -1 the hottest, 0 neither yet (for counting round trips).
    traversals: [n_walkers] int32, completed one-way trips coldest <-> hottest.
    swap_attempts: [n_replicas - 1] int32, attempts per pair summed over walkers.
    swap_accepts: [n_replicas - 1] int32, accepted swaps per pair summed over walkers.
    swap_probability: [n_replicas - 1] float, summed Metropolis probabilities of the attempts.
    step: int32, MD steps done.
    n_swap_rounds: int32, swap rounds done (their parity alternates).
  """
  positions: Array
  momenta: Array
  forces: Array
  energies: Array
  label: Array
  traversals: Array
  swap_attempts: Array
  swap_accepts: Array
  swap_probability: Array
  step: Array
  n_swap_rounds: Array


class ReplicaExchangeFrames(NamedTuple):
  """What ``ReplicaExchange.run`` records at each saved frame.

  Attributes:
    positions: [n_frames, n_walkers, 3 n_atoms] the coldest slot's positions (nm).
    energies: [n_frames, n_walkers] their potential energies (kJ/mol).
    mean_energies: [n_frames, n_replicas] potential energy of each slot, mean over walkers.
    kinetic_temperature: [n_frames, n_replicas] 2 KE / (3 n_atoms k_B) of each slot from the
      full-step momenta, mean over walkers (BAOAB runs it O(dt^2) cold).
  """
  positions: Array
  energies: Array
  mean_energies: Array
  kinetic_temperature: Array


class ReplicaExchange(NamedTuple):
  """Pure functions of a replica-exchange sampler (built by ``make_replica_exchange``).

  Attributes:
    init: ``(key, initial_positions=None) -> ReplicaExchangeState``; positions default to the
      system's structure ([n_atoms, 3] or [n_replicas, n_walkers, n_atoms, 3]).
    step: ``(key, state) -> (state, SwapResult)``: ``swap_every`` MD steps, then one swap round.
    run: ``(key, state, n_frames) -> (state, ReplicaExchangeFrames)``, jitted, ``n_frames``
      static: ``n_frames * save_every`` steps, a frame after each ``save_every``.
    temperatures: [n_replicas] K.
    n_walkers: walkers per temperature.
  """
  init: Callable
  step: Callable
  run: Callable
  temperatures: np.ndarray
  n_walkers: int


def make_replica_exchange(system: MolecularSystem, temperatures, *, n_walkers: int,
                          dt: float = 0.001, friction: float = 1.0, swap_every: int = 100,
                          save_every: int = 500) -> ReplicaExchange:
  """Builds a replica-exchange Langevin sampler for a molecule.

  Args:
    system: the molecular system (its ``precision`` sets the dtype; its raw energy is used,
      not the regularised one).
    temperatures: [n_replicas] K, increasing; the first is the one that gets sampled.
    n_walkers: independent replica ladders (the batch axis, with the replicas).
    dt: time step in ps (no constraints: ~1 fs for the X-H bonds).
    friction: Langevin friction in 1/ps.
    swap_every: MD steps between swap rounds.
    save_every: MD steps between saved frames (a multiple of ``swap_every``).

  Returns:
    The ``ReplicaExchange`` functions.
  """
  temperatures = np.asarray(temperatures, np.float64)
  if temperatures.ndim != 1 or temperatures.size < 1 or np.any(np.diff(temperatures) <= 0):
    raise ValueError(f"temperatures must be a non-empty increasing list, got {temperatures}")
  if save_every % swap_every:
    raise ValueError(f"save_every={save_every} must be a multiple of swap_every={swap_every}")
  dtype = system.energy_fns.dtype
  n_rep, n_atoms = temperatures.size, system.n_atoms
  kt = jnp.asarray(MOLAR_GAS_CONSTANT * temperatures, dtype)
  betas = 1.0 / kt
  batch_energy_and_forces = system.energy_fns.batch_energy_and_forces
  shape = (n_rep, n_walkers, n_atoms, 3)

  def energy_and_forces(r):
    e, f = batch_energy_and_forces(r.reshape((n_rep * n_walkers, n_atoms, 3)))
    return e.reshape(n_rep, n_walkers), f.reshape(shape)

  # Slot r of every walker runs at kt[r].
  langevin = make_langevin(energy_and_forces, system.masses, kt[:, None], dt=dt,
                           friction=friction, dtype=dtype)

  def init(key: Array, initial_positions=None) -> ReplicaExchangeState:
    r0 = system.positions if initial_positions is None else initial_positions
    md = langevin.init(key, jnp.broadcast_to(jnp.asarray(r0, dtype), shape))
    label = jnp.zeros((n_rep, n_walkers), jnp.int32).at[0].set(1).at[-1].set(-1)
    zeros = jnp.zeros((max(n_rep - 1, 0),), jnp.int32)
    return ReplicaExchangeState(
      **md._asdict(), label=label,
      traversals=jnp.zeros((n_walkers,), jnp.int32), swap_attempts=zeros, swap_accepts=zeros,
      swap_probability=jnp.zeros((max(n_rep - 1, 0),), jnp.float32),
      step=jnp.zeros((), jnp.int32), n_swap_rounds=jnp.zeros((), jnp.int32))

  def md_step(key: Array, state: ReplicaExchangeState) -> ReplicaExchangeState:
    md = langevin.step(key, LangevinState(state.positions, state.momenta, state.forces,
                                          state.energies))
    return state._replace(**md._asdict(), step=state.step + 1)

  def exchange(key: Array, state: ReplicaExchangeState):
    swap = swap_neighbours(key, state.energies, betas, state.n_swap_rounds % 2)
    src = swap.source

    def take(a):
      idx = src.reshape(src.shape + (1,) * (a.ndim - 2))
      return jnp.take_along_axis(a, idx, axis=0)

    scale = jnp.sqrt(kt[:, None] / kt[src])[..., None, None]
    label = take(state.label)
    hot = (jnp.arange(n_rep) == n_rep - 1)[:, None]
    cold = (jnp.arange(n_rep) == 0)[:, None]
    arrived = (hot & (label == 1)) | (cold & (label == -1))
    label = jnp.where(hot, -1, jnp.where(cold, 1, label)) if n_rep > 1 else label
    state = state._replace(
      positions=take(state.positions), momenta=take(state.momenta) * scale,
      forces=take(state.forces), energies=take(state.energies), label=label,
      traversals=state.traversals + jnp.sum(arrived, axis=0).astype(jnp.int32),
      swap_attempts=state.swap_attempts + n_walkers * swap.attempted.astype(jnp.int32),
      swap_accepts=state.swap_accepts + jnp.sum(swap.accepted, axis=1).astype(jnp.int32),
      swap_probability=state.swap_probability + jnp.sum(
        swap.acceptance_probability, axis=1).astype(jnp.float32),
      n_swap_rounds=state.n_swap_rounds + 1)
    return state, swap

  def step(key: Array, state: ReplicaExchangeState):
    key_md, key_swap = jax.random.split(key)

    def body(i, s):
      return md_step(jax.random.fold_in(key_md, i), s)

    state = jax.lax.fori_loop(0, swap_every, body, state)
    return exchange(key_swap, state)

  def observe(state: ReplicaExchangeState) -> ReplicaExchangeFrames:
    ke = langevin.kinetic_energy(state.momenta)
    return ReplicaExchangeFrames(
      positions=state.positions[0].reshape(n_walkers, 3 * n_atoms),
      energies=state.energies[0], mean_energies=jnp.mean(state.energies, axis=1),
      kinetic_temperature=jnp.mean(ke, axis=1) * 2.0 / (3 * n_atoms * MOLAR_GAS_CONSTANT))

  rounds_per_frame = save_every // swap_every

  def frame(state: ReplicaExchangeState, key: Array):
    state = jax.lax.fori_loop(
      0, rounds_per_frame, lambda i, s: step(jax.random.fold_in(key, i), s)[0], state)
    return state, observe(state)

  @functools.partial(jax.jit, static_argnames="n_frames")
  def run(key: Array, state: ReplicaExchangeState, n_frames: int):
    return jax.lax.scan(frame, state, jax.random.split(key, n_frames))

  return ReplicaExchange(init=init, step=jax.jit(step), run=run, temperatures=temperatures,
                         n_walkers=int(n_walkers))


class ReplicaExchangeResult(NamedTuple):
  """Reference frames at the coldest temperature and how they were made.

  Attributes:
    positions: [n_frames, 3 n_atoms] float32 nm, walker-major (walker 0's frames in time order,
      then walker 1's, ...).
    energies: [n_frames] float32 kJ/mol, potential energies of ``positions``.
    walker: [n_frames] int32, the independent walker each frame came from.
    temperature: the sampled temperature (K).
    swap_acceptance: [n_replicas - 1] accepted / attempted swaps of pair (i, i + 1) in the
      production run.
    swap_probability: [n_replicas - 1] mean Metropolis probability of those attempts.
    mean_energies: [n_replicas] production mean potential energy per temperature (kJ/mol).
    kinetic_temperature: [n_replicas] production mean kinetic temperature per slot (K).
    round_trips_per_walker: completed coldest -> hottest -> coldest trips per walker (production).
    protocol: dict: system, temperatures, dt, friction, steps, walkers, cost, ...
  """
  positions: np.ndarray
  energies: np.ndarray
  walker: np.ndarray
  temperature: float
  swap_acceptance: np.ndarray
  swap_probability: np.ndarray
  mean_energies: np.ndarray
  kinetic_temperature: np.ndarray
  round_trips_per_walker: float
  protocol: dict


class RunCheckpoint:
  """A replica-exchange run's checkpoint folder: the sampler state after the last finished
  call (``state.npz``, overwritten, with the run's settings and position in ``meta.json``) and
  the production frames in one file per call (``frames_<first frame>.npz``, written once), so
  that each checkpoint costs the same whatever the run's length.

  A run resumed from it continues after the last finished call with the same keys, so an
  interrupted and resumed run gives the frames of an uninterrupted one. The production length
  (``n_steps``) may change when a run is continued: every call's key depends only on where it
  starts, so a run continued with a longer or shorter production (not shorter than what it has
  done) gives the frames of an uninterrupted run of the new length.
  """

  # Settings a continued run may change (see :meth:`load`).
  CHANGEABLE = ("n_steps",)

  VERSION = 1

  def __init__(self, directory: str, settings: dict):
    self.directory = directory
    self.settings = settings

  def _path(self, name: str) -> str:
    return os.path.join(self.directory, name)

  def load(self, template: ReplicaExchangeState):
    """``(phase, frames done in it, state, production frames, wall s, CPU s)`` of the last
    checkpoint, or None when there is none. A checkpoint of other settings is an error that
    names them."""
    meta_path = self._path("meta.json")
    if not os.path.isfile(meta_path):
      return None
    with open(meta_path) as f:
      meta = json.load(f)
    if meta.get("version") != self.VERSION:
      raise ValueError(f"{self.directory}: checkpoint version {meta.get('version')!r}, this "
                       f"cmtjax writes {self.VERSION}; remove the folder to start afresh")
    stored = meta["settings"]
    differ = sorted(k for k in set(stored) | set(self.settings)
                    if stored.get(k) != self.settings.get(k) and k not in self.CHANGEABLE)
    if differ:
      raise ValueError(f"{self.directory} holds a run with other settings ("
                       + ", ".join(f"{k}: {stored.get(k)!r} there, {self.settings.get(k)!r} now"
                                   for k in differ)
                       + "); use another --checkpoint folder or the same settings")
    with np.load(self._path("state.npz")) as z:
      leaves = [jnp.asarray(z[f"leaf_{i}"]) for i in range(len(z.files))]
    state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
    frames = []
    for first in meta["frame_files"]:
      with np.load(self._path(f"frames_{first:09d}.npz")) as z:
        frames.append(ReplicaExchangeFrames(*(z[name] for name in
                                              ReplicaExchangeFrames._fields)))
    return (meta["phase"], meta["done"], state, frames, meta["wall_seconds"],
            meta["cpu_seconds"])

  def save(self, phase: str, done: int, state: ReplicaExchangeState, new_frames,
           frame_files: list, wall: float, cpu: float) -> None:
    """Writes the new frames (if any), then the state and the position in the run."""
    os.makedirs(self.directory, exist_ok=True)
    if new_frames is not None:
      first = frame_files[-1][1] if frame_files else 0
      np.savez(self._path(f"frames_{first:09d}.npz"), **new_frames._asdict())
      frame_files.append((first, first + new_frames.energies.shape[0]))
    tmp = self._path("state.tmp.npz")
    np.savez(tmp, **{f"leaf_{i}": np.asarray(leaf)
                     for i, leaf in enumerate(jax.tree_util.tree_leaves(state))})
    os.replace(tmp, self._path("state.npz"))
    meta = {"version": self.VERSION, "settings": self.settings, "phase": phase, "done": done,
            "frame_files": [first for first, _ in frame_files], "wall_seconds": wall,
            "cpu_seconds": cpu}
    with open(self._path("meta.tmp.json"), "w") as f:
      json.dump(meta, f, indent=1)
    os.replace(self._path("meta.tmp.json"), self._path("meta.json"))


def _check_new_length(folder: str, done: int, total: int, frames_per_call: int,
                      save_every: int) -> None:
  """A checkpoint with ``done`` production frames can continue to ``total`` frames as the
  uninterrupted run of that length would: not fewer frames than done, and only after whole
  calls (a finished run's last, partial call cannot be extended)."""
  if done > total:
    raise ValueError(f"{folder} holds {done * save_every} production steps, more than the "
                     f"{total * save_every} asked for; ask for at least {done * save_every}")
  if done < total and done % frames_per_call:
    raise ValueError(f"{folder} holds a finished run of {done * save_every} production steps "
                     f"that ended with a partial call; it cannot be extended (start afresh)")


_SAMPLERS: collections.OrderedDict = collections.OrderedDict()


def _cached_sampler(system: MolecularSystem, temperatures, **settings) -> ReplicaExchange:
  """``make_replica_exchange`` for these settings, reused while the same ``system`` object is
  sampled with them again (a run continued from its checkpoint in the same process then
  skips recompiling). The few most recent samplers are kept; each holds its system alive, so
  the key's ``id(system)`` cannot be reused by another object."""
  key = (id(system), tuple(float(t) for t in np.asarray(temperatures).ravel()),
         tuple(sorted(settings.items())))
  if key in _SAMPLERS:
    _SAMPLERS.move_to_end(key)
    return _SAMPLERS[key][1]
  sampler = make_replica_exchange(system, temperatures, **settings)
  _SAMPLERS[key] = (system, sampler)
  while len(_SAMPLERS) > 4:
    _SAMPLERS.popitem(last=False)
  return sampler


def replica_exchange(system: MolecularSystem, key: Array, *, temperatures, n_walkers: int,
                     n_steps: int, burn_in: int = 0, save_every: int = 500,
                     swap_every: int = 100, dt: float = 0.001, friction: float = 1.0,
                     frames_per_call: int = 20, initial_positions=None,
                     progress: Callable[[dict], None] | None = None,
                     checkpoint: str | None = None) -> ReplicaExchangeResult:
  """Runs replica-exchange Langevin MD and returns the coldest replica's frames.

  Args:
    system: the molecular system.
    key: PRNG key.
    temperatures: [n_replicas] increasing, K; frames are of ``temperatures[0]``.
    n_walkers: independent walkers (replica ladders).
    n_steps: production MD steps per replica (a multiple of ``save_every``).
    burn_in: MD steps discarded first (a multiple of ``save_every``); the swap statistics are
      reset after it.
    save_every: steps between saved frames (a multiple of ``swap_every``).
    swap_every: steps between swap rounds.
    dt: time step in ps.
    friction: Langevin friction in 1/ps.
    frames_per_call: frames per jitted call (``progress`` is called after each).
    initial_positions: [n_atoms, 3] or [n_replicas, n_walkers, n_atoms, 3] nm (default: the
      system's structure).
    progress: called with a dict (phase, step, n_steps, wall_s, swap_acceptance) after each call.
    checkpoint: a folder (:class:`RunCheckpoint`) written after every call; a run started
      with a folder that holds a checkpoint of the same settings continues from it (and
      gives the frames an uninterrupted run would), one of other settings is an error. Only
      ``n_steps`` may differ: the run then ends at the new length (e.g. a long generation
      ended early with the frames it has, or extended).

  Returns:
    The ``ReplicaExchangeResult``.

  Raises:
    FloatingPointError: some saved energy is not finite (the integration blew up).
  """
  if n_steps <= 0 or n_steps % save_every or burn_in % save_every:
    raise ValueError(f"n_steps={n_steps} and burn_in={burn_in} must be multiples of "
                     f"save_every={save_every} (n_steps > 0)")
  sampler = _cached_sampler(system, temperatures, n_walkers=n_walkers, dt=dt,
                            friction=friction, swap_every=swap_every, save_every=save_every)
  n_rep = sampler.temperatures.size
  key_init, key_burn, key_run = jax.random.split(key, 3)
  state = sampler.init(key_init, initial_positions)
  frames: list = []
  frame_files: list = []
  phases = (("burn-in", key_burn, burn_in // save_every, False),
            ("production", key_run, n_steps // save_every, True))
  start_phase, start_done, wall_before, cpu_before = "burn-in", 0, 0.0, 0.0
  store = None
  if checkpoint is not None:
    settings = {"system": system.name, "precision": system.precision,
                "key": np.asarray(jax.random.key_data(key)).tolist()
                if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else np.asarray(key).tolist(),
                "temperatures": [float(t) for t in sampler.temperatures],
                "n_walkers": int(n_walkers), "n_steps": int(n_steps), "burn_in": int(burn_in),
                "save_every": int(save_every), "swap_every": int(swap_every), "dt": float(dt),
                "friction": float(friction), "frames_per_call": int(frames_per_call),
                "initial_positions": initial_positions is not None}
    store = RunCheckpoint(checkpoint, settings)
    loaded = store.load(state)
    if loaded is not None:
      start_phase, start_done, state, frames, wall_before, cpu_before = loaded
      if start_phase == "production":
        _check_new_length(checkpoint, start_done, n_steps // save_every, frames_per_call,
                          save_every)
      sizes = [f.energies.shape[0] for f in frames]
      frame_files = [(int(sum(sizes[:i])), int(sum(sizes[:i + 1]))) for i in range(len(sizes))]
  wall0, cpu0 = time.perf_counter(), time.process_time()

  def advance(key, state, total, phase, keep, done):
    while done < total:
      n = min(frames_per_call, total - done)
      state, fr = sampler.run(jax.random.fold_in(key, done), state, n)
      fr = jax.tree.map(np.asarray, fr) if keep else None
      if keep:
        frames.append(fr)
      done += n
      if store is not None:
        store.save(phase, done, state, fr, frame_files,
                   wall_before + time.perf_counter() - wall0,
                   cpu_before + time.process_time() - cpu0)
      if progress is not None:
        att = np.maximum(np.asarray(state.swap_attempts), 1)
        progress({"phase": phase, "step": done * save_every, "n_steps": total * save_every,
                  "wall_s": wall_before + time.perf_counter() - wall0,
                  "swap_acceptance": (np.asarray(state.swap_accepts) / att).tolist()})
    return state

  for phase, phase_key, total, keep in phases:
    if phase == "burn-in" and start_phase == "production":
      continue  # finished before the checkpoint
    if phase == "production" and start_phase == "burn-in":
      # Production starts: the swap statistics count from here.
      zeros = jnp.zeros_like(state.swap_attempts)
      state = state._replace(swap_attempts=zeros, swap_accepts=zeros,
                             swap_probability=jnp.zeros_like(state.swap_probability),
                             traversals=jnp.zeros_like(state.traversals))
    state = advance(phase_key, state, total, phase, keep,
                    start_done if phase == start_phase else 0)
  jax.block_until_ready(state)
  wall = wall_before + time.perf_counter() - wall0
  cpu = cpu_before + time.process_time() - cpu0

  fr = ReplicaExchangeFrames(*(np.concatenate(a) for a in zip(*frames)))
  n_frames = fr.positions.shape[0]
  positions = np.ascontiguousarray(np.swapaxes(fr.positions, 0, 1)).reshape(
    n_walkers * n_frames, 3 * system.n_atoms).astype(np.float32)
  energies = np.ascontiguousarray(fr.energies.T).reshape(-1).astype(np.float32)
  if not np.all(np.isfinite(energies)):
    raise FloatingPointError(f"{np.sum(~np.isfinite(energies))} saved energies are not finite; "
                             "reduce dt or the highest temperature")
  attempts = np.maximum(np.asarray(state.swap_attempts), 1)
  total_steps = burn_in + n_steps
  protocol = {
    "system": system.name,
    "method": "replica-exchange BAOAB Langevin MD (JAX energy, no constraints)",
    "precision": system.precision,
    "temperatures_K": [float(t) for t in sampler.temperatures],
    "n_replicas": int(n_rep),
    "n_walkers": int(n_walkers),
    "dt_ps": float(dt),
    "friction_per_ps": float(friction),
    "burn_in_steps": int(burn_in),
    "production_steps": int(n_steps),
    "save_every": int(save_every),
    "swap_every": int(swap_every),
    "swap_scheme": "alternating even/odd neighbour pairs, Metropolis on potential energies, "
                   "momenta rescaled by sqrt(T_new/T_old)",
    "frames_per_walker": int(n_frames),
    "n_frames": int(n_frames * n_walkers),
    "simulated_time_per_replica_ps": float(total_steps * dt),
    "energy_evaluations": int(n_rep * n_walkers * (total_steps + 1)),
    "wall_seconds": float(wall),
    "cpu_seconds": float(cpu),
    "device": str(jax.devices()[0].platform),
  }
  return ReplicaExchangeResult(
    positions=positions, energies=energies,
    walker=np.repeat(np.arange(n_walkers, dtype=np.int32), n_frames),
    temperature=float(sampler.temperatures[0]),
    swap_acceptance=np.asarray(state.swap_accepts) / attempts,
    swap_probability=np.asarray(state.swap_probability) / attempts,
    mean_energies=fr.mean_energies.mean(0), kinetic_temperature=fr.kinetic_temperature.mean(0),
    round_trips_per_walker=float(np.asarray(state.traversals).mean() / 2.0),
    protocol=protocol)
