"""Regularisation of molecular energies for importance weights.

A single clash can produce an energy of 1e12 kJ/mol or an overflow; inside an importance weight
such a value would dominate everything. Energies are therefore made logarithmic above a
threshold and then capped; non-finite energies (NaN, +-inf, e.g. float32 overflow of r^-12) are
mapped to the cap and counted, so they never poison a batch silently:

  E_reg = E                                   if E <= E_log
        = E_log + log(1 + E - E_log)          if E >  E_log
  E_reg = min(E_reg, E_cap);  E_reg = E_cap where E is not finite.

Below E_log the map is the identity, so regularisation never changes physical energies.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

DEFAULT_ENERGY_LOG_THRESHOLD = 1.0e8  # kJ/mol
DEFAULT_ENERGY_CAP = 1.0e9  # kJ/mol


class EnergyInfo(NamedTuple):
  """Diagnostics of one batch of regularised energies.

  Attributes:
    energy: [batch] raw potential energies (kJ/mol), possibly non-finite.
    regularised_energy: [batch] energies after regularisation (kJ/mol), always finite.
    n_nonfinite: [] number of configurations with a non-finite raw energy.
    n_regularised: [] number of configurations whose energy was changed (above E_log, capped
      or non-finite).
  """
  energy: Array
  regularised_energy: Array
  n_nonfinite: Array
  n_regularised: Array


def regularise_energy(energy: Array,
                      log_threshold: float = DEFAULT_ENERGY_LOG_THRESHOLD,
                      cap: float = DEFAULT_ENERGY_CAP) -> tuple[Array, EnergyInfo]:
  """Linear-to-log regularisation, cap, and replacement of non-finite energies.

  Gradients are finite wherever the raw energy's gradient is: the non-finite branch does not
  feed NaNs back through the log (double ``where``).

  Args:
    energy: [batch] potential energies in kJ/mol.
    log_threshold: E_log, energy above which the growth becomes logarithmic (kJ/mol).
    cap: E_cap, largest regularised energy (kJ/mol); must be >= log_threshold.

  Returns:
    ``(regularised [batch], EnergyInfo)``.
  """
  if cap < log_threshold:
    raise ValueError(f"energy cap {cap} must be >= the log threshold {log_threshold}")
  finite = jnp.isfinite(energy)
  e = jnp.where(finite, energy, 0.0)
  above = e > log_threshold
  excess = jnp.where(above, e - log_threshold, 0.0)
  e_log = jnp.where(above, log_threshold + jnp.log1p(excess), e)
  capped = e_log > cap
  e_reg = jnp.where(finite, jnp.minimum(e_log, cap), cap).astype(energy.dtype)
  changed = jnp.logical_or(jnp.logical_not(finite), jnp.logical_or(above, capped))
  info = EnergyInfo(
    energy=energy, regularised_energy=e_reg,
    n_nonfinite=jnp.sum(jnp.logical_not(finite)), n_regularised=jnp.sum(changed))
  return e_reg, info
