"""Grids of runs for the benchmark scripts (compare.py, ablation.py, coverage.py).

A script names its variants (:class:`Variant`: a name and config layers laid over the target's
preset), lists the runs of its grid (one key per variant × seed, or whatever it iterates over)
and says how to set up each (:class:`Job`: the config, the run's own folder, whether its
finished ``metrics.json`` is reused). :func:`run_grid` runs them through
:func:`cmtjax.runner.run`, in this process or in worker processes pinned to shares of the CPUs,
a run whose config needs another run's result (``after``) only once that one has finished, and
yields each run's metrics as it finishes. The rest helps with the tables: reading and
comparing finished runs, mean ± standard error over seeds, Markdown rows, JSON files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
import traceback
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, Optional

import numpy as np

from cmtjax.io.config import RunConfig, build_config, to_dict
from cmtjax.io.presets import preset_for
from cmtjax.runner import CHECKPOINT_DIR

# Absolute-value summary keys and the signed metric each is taken from.
ABS_OF = {"abs_log_z_error": "log_z_error", "abs_ais_log_z_error": "ais_log_z_error"}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One way to run: a name and the config layers laid over the target's preset.

  Attributes:
    name: the name in tables and result files.
    layers: config layers (dicts), later ones win; the caller decides where shared
      overrides (``--set``) go among them.
  """

  name: str
  layers: tuple[dict, ...] = ()

  @property
  def label(self) -> str:
    """A folder-safe form of the name."""
    return run_label(self.name)

  def config(self, target: str, *extra: dict) -> RunConfig:
    """The validated config: ``target``'s preset, this variant's layers, then ``extra``."""
    return build_config([preset_for(target), *self.layers, *extra])


@dataclasses.dataclass(frozen=True)
class Job:
  """One run of a grid: its config, its own output folder, and whether to reuse it.

  Attributes:
    cfg: the run's config.
    out: the run's folder (``metrics.json`` and the other files of :func:`cmtjax.runner.run`).
    reuse: read the finished run's ``metrics.json`` instead of running it.
    resume: continue the interrupted run in ``out`` from its newest checkpoint (a run that was
      stopped, e.g. at the end of a sitting); the checkpoint must be of the same config, or the
      run becomes an error entry that names the differences.
  """

  cfg: RunConfig
  out: str
  reuse: bool = False
  resume: bool = False


@dataclasses.dataclass(frozen=True)
class Finished:
  """A run of a grid that has finished (or failed, or was read back).

  Attributes:
    key: the run's key in the grid.
    job: the job it ran.
    metrics: its metrics (``metrics.json``); on a failure ``{"seed", "error"}``.
    wall_seconds: wall time of the run in the process that ran it (of reading it back when
      reused; from its submission when its worker died).
    cpu_seconds: CPU seconds (user + system, all threads) of that process during the run;
      None when reused or when the worker died.
  """

  key: Hashable
  job: Job
  metrics: dict
  wall_seconds: float
  cpu_seconds: Optional[float]

  @property
  def reused(self) -> bool:
    return self.job.reuse


def run_grid(keys: Iterable[Hashable], prepare: Callable[[Hashable], Job], *, workers: int = 0,
             after: Optional[Mapping[Hashable, Hashable]] = None,
             progress: bool = True) -> Iterator[Finished]:
  """Runs a grid and yields each run as it finishes.

  ``prepare(key)`` is called just before a run starts, after every run it waits for has been
  yielded (and handled by the caller), so a config may depend on earlier results. A run that
  raises becomes an error entry; the grid goes on.

  Args:
    keys: the runs, in the order they start (when their waits allow).
    prepare: key -> its :class:`Job`.
    workers: 0: every run in this process, one after the other; N: up to N runs at a time,
      each in a fresh process (spawned, so a fresh JAX) pinned to its own share of the CPUs.
    after: key -> the key it waits for; waits on keys outside the grid are dropped.
    progress: progress bars (runs in this process only).

  Yields:
    :class:`Finished`, in the order the runs finish.

  Raises:
    ValueError: when the waits form a cycle.
  """
  keys = list(dict.fromkeys(keys))
  waits = {k: w for k, w in (after or {}).items() if k in keys and w in keys}
  pending, done = list(keys), set()

  def ready() -> list:
    out = [k for k in pending if k not in waits or waits[k] in done]
    return out if workers > 0 else out[:1]

  def start(key) -> tuple[Job, Optional[Finished]]:
    pending.remove(key)
    job = prepare(key)
    if not job.reuse:
      return job, None
    t0 = time.perf_counter()
    try:
      m = read_metrics(job.out)
    except Exception as e:  # an unreadable run is an error entry, not a lost table
      m = _error(job.cfg, e)
    return job, Finished(key, job, m, time.perf_counter() - t0, None)

  if workers <= 0:
    while pending:
      for key in ready() or _stuck(pending):
        job, fin = start(key)
        if fin is None:
          fin = Finished(key, job, *_execute(job.cfg, job.out, progress, job.resume))
        done.add(key)
        yield fin
    return

  import concurrent.futures as cf
  import multiprocessing as mp

  ctx = mp.get_context("spawn")  # a fresh JAX in every worker
  slot = ctx.Value("i", 0)
  with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                              initargs=(slot, workers)) as pool:
    running: dict = {}
    while pending or running:
      for key in ready():
        job, fin = start(key)
        if fin is not None:
          done.add(key)
          yield fin
        else:
          running[pool.submit(_execute, job.cfg, job.out, False, job.resume)] = (
              key, job, time.perf_counter())
      if not running:
        if pending and not ready():
          _stuck(pending)
        continue
      finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
      for fut in finished:
        key, job, t0 = running.pop(fut)
        try:
          fin = Finished(key, job, *fut.result())
        except Exception as e:  # the worker itself died
          fin = Finished(key, job, _error(job.cfg, e), time.perf_counter() - t0, None)
        done.add(key)
        yield fin


def _stuck(pending: list) -> list:
  raise ValueError(f"runs {pending} wait for each other")


def _error(cfg: RunConfig, e: BaseException) -> dict:
  return {"seed": cfg.seed, "error": f"{type(e).__name__}: {e}"}


def _execute(cfg: RunConfig, out: str, progress: bool,
             resume: bool = False) -> tuple[dict, float, float]:
  """One run through :func:`cmtjax.runner.run` (continued from its checkpoint when
  ``resume``): (metrics or an error entry, wall s, CPU s of this process)."""
  c0, t0 = time.process_time(), time.perf_counter()
  try:
    from cmtjax.runner import run
    m = run(cfg, out, progress=progress, resume=resume)
  except Exception as e:  # one failed run must not lose the table
    traceback.print_exc()
    m = _error(cfg, e)
  return m, time.perf_counter() - t0, time.process_time() - c0


def _init_worker(slot, n_jobs: int) -> None:
  """Pins each worker process to its own share of the CPUs, so parallel runs do not contend."""
  with slot.get_lock():
    index = slot.value
    slot.value += 1
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  if len(cpus) >= n_jobs:
    share = [c for i, c in enumerate(cpus) if i % n_jobs == index % n_jobs]
    os.sched_setaffinity(0, share)


# ---------------------------------------------------------------------------- finished runs

def has_metrics(out: str) -> bool:
  """Whether the run in ``out`` has finished (its ``metrics.json`` exists)."""
  return os.path.isfile(os.path.join(out, "metrics.json"))


def has_checkpoint(out: str) -> bool:
  """Whether ``out`` holds an interrupted run: checkpoints but no ``metrics.json``."""
  ckpt = os.path.join(out, CHECKPOINT_DIR)
  return (not has_metrics(out) and os.path.isdir(ckpt)
          and any(name.isdigit() for name in os.listdir(ckpt)))


def resumable_job(cfg: RunConfig, out: str, resume: bool) -> Job:
  """The job of a grid run with ``--resume``: a finished run is read back, an interrupted
  one continues from its newest checkpoint, anything else runs afresh."""
  if not resume:
    return Job(cfg, out)
  return Job(cfg, out, reuse=has_metrics(out), resume=has_checkpoint(out))


def read_metrics(out: str) -> dict:
  """The ``metrics.json`` of the run in ``out``."""
  with open(os.path.join(out, "metrics.json")) as f:
    return json.load(f)


def write_metrics(out: str, metrics: dict) -> None:
  """Replaces the ``metrics.json`` of the run in ``out``."""
  write_json(os.path.join(out, "metrics.json"), metrics)


def same_config(stored: Any, current: Any) -> bool:
  """True when every key of ``stored`` has the same value in ``current``.

  Keys of ``current`` that ``stored`` lacks (settings added to the library after the run, at
  their defaults) are not compared.
  """
  if isinstance(stored, dict):
    return isinstance(current, dict) and all(
        k in current and same_config(v, current[k]) for k, v in stored.items())
  return stored == current


def finished_with(out: str, cfg: RunConfig) -> bool:
  """Whether ``out`` holds a finished run (readable ``metrics.json``) of the config ``cfg``."""
  try:
    with open(os.path.join(out, "config.json")) as f:
      stored = json.load(f)
    read_metrics(out)
  except (OSError, json.JSONDecodeError):
    return False
  return same_config(stored, json.loads(json.dumps(to_dict(cfg))))


def anneal_steps(metrics: dict) -> Optional[int]:
  """Annealing steps a CMT run took to reach the target (all its steps if it never did)."""
  reached = metrics.get("target_reached_at_step")
  return (reached + 1) if reached is not None else metrics.get("n_steps")


def flat_metrics(metrics: dict) -> dict:
  """The scalar metrics, the wall-clock figures of ``timing`` next to them."""
  m = {**metrics.get("timing", {}), **metrics}
  return {k: v for k, v in m.items() if not isinstance(v, (list, dict))}


# ---------------------------------------------------------------------------- summaries

def mean_se(values: Iterable, *, keep_nan: bool = False) -> dict:
  """``{"mean", "se", "n"}`` of the values (se = std(ddof=1)/√n; 0 for one value).

  None is left out, and so is any non-finite value unless ``keep_nan`` (then a diverged run
  shows as nan).
  """
  v = np.asarray([x for x in values
                  if x is not None and (keep_nan or math.isfinite(float(x)))], float)
  if v.size == 0:
    return {"mean": None, "se": None, "n": 0}
  se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
  return {"mean": float(v.mean()), "se": se, "n": int(v.size)}


def summarise(runs: Iterable[dict], keys: Iterable[str], *, abs_of: Mapping[str, str] = ABS_OF,
              keep_nan: bool = False) -> dict[str, dict]:
  """:func:`mean_se` over the runs without an error of each key that some run reports.

  A key of ``abs_of`` is the absolute value of the signed metric it names.
  """
  ok = [r for r in runs if "error" not in r]
  out = {}
  for key in keys:
    vals = []
    for r in ok:
      v = r.get(key)
      if key in abs_of and r.get(abs_of[key]) is not None:
        v = abs(r[abs_of[key]])
      vals.append(v)
    s = mean_se(vals, keep_nan=keep_nan)
    if s["n"]:
      out[key] = s
  return out


def format_mean_se(s: Optional[dict], spec: str = ".3g", scale: float = 1.0) -> str:
  """``"mean ± se"`` of a :func:`mean_se` dict (no ± for one value; "–" for none)."""
  if not s or s.get("mean") is None:
    return "–"
  m, se = scale * s["mean"], scale * s["se"]
  if s["n"] > 1:
    return f"{m:{spec}} ± {se:.2g}"
  return f"{m:{spec}}"


# ---------------------------------------------------------------------------- files

def run_label(text: str) -> str:
  """A folder-safe label of a variant name or spec."""
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text.replace(":", "__")).strip("_")


def merge(a: dict, b: dict) -> dict:
  """``b`` laid over ``a`` (nested dicts merged; neither is changed)."""
  out = dict(a)
  for k, v in b.items():
    out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def md_row(cells: Iterable) -> str:
  """One Markdown table row."""
  return "| " + " | ".join(str(c) for c in cells) + " |"


def md_table(header: list[str], rows: Iterable[Iterable] = ()) -> list[str]:
  """The lines of a Markdown table: header, separator, rows."""
  return [md_row(header), "|" + "---|" * len(header), *(md_row(r) for r in rows)]


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON."""
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)


def load_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file (none if it does not exist)."""
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
