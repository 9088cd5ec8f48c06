"""Checks of a finished run that a high ESS can hide: missing modes, a log Z off by more than
its statistical error, a path that never reached the target, wrong-handed molecules, a cis
peptide isomer the reference holds and the model misses.

Reverse ESS is measured on the model's own samples, so it cannot see a mode the model never
visits; where log Z is known, a missing mode shows as a log Z error of about log(1 − its
weight), far beyond the estimate's standard error.
"""

from __future__ import annotations

from typing import Any, Optional

# |log Z error| beyond this many standard errors is reported (and never below the floor,
# which float32 sums over ~1e5 weights can reach).
LOG_Z_SIGMAS = 3.0
LOG_Z_FLOOR = 1e-3
# A peptide bond whose cis isomer the reference holds and the reweighted model samples at
# under this share of the reference's population: the flow misses the isomer.
CIS_MISSED = 0.01


def run_warnings(metrics: dict[str, Any], final_beta: Optional[float] = None,
                 final_alpha: Optional[float] = None) -> list[str]:
  """The warnings of a run's final metrics, one sentence each (empty when all is well).

  Args:
    metrics: the run's metrics (``modes_covered``/``n_modes``, ``log_z_error``/``log_z_se``,
      ``target_reached_at_step`` for CMT, ``chirality_error_rate`` and the
      ``cis_peptide_fraction_*_per_bond`` lists for molecules,
      ``stopped_at_time_limit`` with ``max_training_minutes`` and ``max_target_evals``,
      ``planned_target_evals`` of a run planned to its time limit;
      each check runs only when its figures are there).
    final_beta: CMT's β after the last step (for the message when the target was not reached).
    final_alpha: CMT's α after the last step (the same message: at β = 1 a path short of the
      target is one whose trust region still held the last step back, α < 1).
  """
  out = []
  timed_out = bool(metrics.get("stopped_at_time_limit"))
  planned = metrics.get("planned_target_evals")
  k, n = metrics.get("modes_covered"), metrics.get("n_modes")
  if k is not None and n is not None and k < n:
    out.append(f"only {k} of {n} modes covered: the flow misses mass that reverse ESS "
               f"cannot see")
  err, se = metrics.get("log_z_error"), metrics.get("log_z_se")
  if err is not None and se is not None:  # a particle sampler's log Z has no error bar here
    limit = max(LOG_Z_SIGMAS * se, LOG_Z_FLOOR)
    if not abs(err) <= limit:
      out.append(f"log Z error {err:+.3g} exceeds {LOG_Z_SIGMAS:g} standard errors "
                 f"({limit:.2g}): mass is missing or misplaced")
  if metrics.get("method") == "cmt" and "target_reached_at_step" in metrics \
      and metrics["target_reached_at_step"] is None:
    where = f" (final β = {final_beta:.3g})" if final_beta is not None else ""
    if final_beta is not None and final_alpha is not None and final_beta >= 1.0:
      where = (f" (final α = {final_alpha:.6g} at β = 1: the trust region still held the last "
               f"step back)")
    if timed_out:
      advice = ("give the run more time" if planned is not None else
                "give the run more time, or plan it to the limit (--plan-minutes)")
      out.append(f"CMT did not reach the target before the time limit{where}: the flow fits "
                 f"an intermediate distribution; {advice}")
    elif planned is not None and planned < metrics.get("max_target_evals", planned + 1):
      out.append(f"CMT did not reach the target within the "
                 f"{planned:,} target evaluations planned to fit the "
                 f"time limit{where}: the flow fits an intermediate distribution; give the run "
                 f"more time (--plan-minutes)")
    else:
      out.append(f"CMT did not reach the target within the budget{where}: the flow fits an "
                 f"intermediate distribution; raise max_target_evals")
  if timed_out:
    out.append(f"training stopped at its time limit ({metrics.get('max_training_minutes'):g} "
               f"min) after {metrics.get('target_evals', 0):,} of the budget's "
               f"{metrics.get('max_target_evals', 0):,} target evaluations; resume with a "
               f"larger limit (--resume DIR --{'plan-' if planned is not None else ''}minutes "
               f"M) to go on")
  rate = metrics.get("chirality_error_rate")
  if rate:
    out.append(f"{rate:.2%} of the samples have a wrong-handed stereocentre")
  ref_cis = metrics.get("cis_peptide_fraction_reference_per_bond") or []
  model_cis = metrics.get("cis_peptide_fraction_reweighted_per_bond") or []
  for k, (ref, model) in enumerate(zip(ref_cis, model_cis)):
    if ref > 0 and model < CIS_MISSED * ref:  # NaN (no weights) is not reported
      n = round(ref * metrics["n_ref"]) if metrics.get("n_ref") else None
      seen = "" if n is None else f" ({n} frame{'' if n == 1 else 's'})"
      out.append(f"peptide bond {k + 1}: {ref:.2g} of the reference is cis{seen}, the "
                 f"reweighted model {model:.2g}: the flow misses the cis isomer (forward ESS "
                 f"and EUBO suffer, reverse ESS cannot see it)")
  return out
