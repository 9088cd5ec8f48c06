"""The CMT dual: g(λ, η), its gradient and Hessian, estimated from one buffer.

Notation (see docs/method.md). A buffer holds N samples x_n ~ q_i with
``lq_n = log q_i(x_n)`` and ``lp_n = log p̃(x_n)``, both in the *same* space (the space in
which the target's log density is defined). The next intermediate distribution is

    q_{i+1}(x) ∝ q_i(x)^{λ/s} p̃(x)^{1/s},      s = 1 + λ + η,

and on the buffer it is represented by the self-normalised weights

    log w_n = (lp_n − (1+η) lq_n) / s,   w̄ = softmax(log w),   log Z = LSE(log w) − log N.

The multipliers maximise the concave dual (signs as corrected in CMT.md's erratum)

    g(λ, η) = −s log Z − λ ε_tr + η (H(q_i) − ε_ent),      H(q_i) ≈ −mean(lq).

With ``r_n = log(N w̄_n)`` (centred log weights) the derivatives are

    ∂g/∂λ = KL̂ − ε_tr,                 KL̂ = Σ w̄ r
    ∂g/∂η = H(q_i) − Ĥ − ε_ent,         Ĥ = −Σ w̄ (lq + r)
    ∇²g   = −(1/s) Cov_w̄[(r, lq + r)]   (negative semi-definite: g is concave)

Everything here is computed from centred quantities so that float32 stays accurate when
|lp| is large (molecular reduced energies of hundreds). Invalid (non-finite) buffer
entries are excluded through a mask, so that shapes stay static under ``jit``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Buffer(NamedTuple):
  """Samples of the current model with their log densities.

  Attributes:
    x: ``[N, dim]`` samples of q_i.
    log_q: ``[N]`` log q_i(x), in the space of the target density.
    log_p: ``[N]`` unnormalised target log density log p̃(x).
    valid: ``[N]`` bool, False where x, log_q or log_p is not finite. Invalid entries carry
      zeros in ``log_q``/``log_p`` and never enter a sum.
  """

  x: Array
  log_q: Array
  log_p: Array
  valid: Array

  @property
  def n_valid(self) -> Array:
    return jnp.sum(self.valid.astype(jnp.int32))

  @property
  def n_invalid(self) -> Array:
    return jnp.sum((~self.valid).astype(jnp.int32))


def make_buffer(x: Array, log_q: Array, log_p: Array) -> Buffer:
  """Builds a :class:`Buffer`, masking every entry with a non-finite value.

  Args:
    x: ``[N, dim]`` samples.
    log_q: ``[N]`` model log densities.
    log_p: ``[N]`` unnormalised target log densities.

  Returns:
    The buffer, with invalid entries zeroed and flagged in ``valid``.
  """
  valid = jnp.isfinite(log_q) & jnp.isfinite(log_p) & jnp.all(jnp.isfinite(x), axis=-1)
  log_q = jnp.where(valid, log_q, 0.0)
  log_p = jnp.where(valid, log_p, 0.0)
  x = jnp.where(valid[:, None], x, 0.0)
  return Buffer(x=x, log_q=log_q, log_p=log_p, valid=valid)


class DualStats(NamedTuple):
  """The dual and its derivatives at one (λ, η).

  Attributes:
    value: g(λ, η).
    grad: ``[2]`` (∂g/∂λ, ∂g/∂η).
    hess: ``[2, 2]`` Hessian of g in (λ, η).
    kl: KL̂(q_{i+1} ‖ q_i).
    entropy_drop: H(q_i) − Ĥ(q_{i+1}).
    log_z: log Z(λ, η).
    ess: step ESS of the weights, 1 / (N Σ w̄²), a fraction in (0, 1].
    entropy: H(q_i) estimated as −mean(lq).
  """

  value: Array
  grad: Array
  hess: Array
  kl: Array
  entropy_drop: Array
  log_z: Array
  ess: Array
  entropy: Array


def log_weights(buffer: Buffer, lam: Array, eta: Array) -> Array:
  """Unnormalised log weights of q_{i+1} relative to q_i on the buffer.

  Returns ``[N]`` with −inf at invalid entries.
  """
  s = 1.0 + lam + eta
  lw = (buffer.log_p - (1.0 + eta) * buffer.log_q) / s
  return jnp.where(buffer.valid, lw, -jnp.inf)


def _centred_log_weights(buffer: Buffer, lam: Array, eta: Array) -> tuple[Array, Array]:
  """:func:`log_weights` less a constant, and the constant.

  log p̃ and log q are centred by their valid means before they are combined, so that the
  weights keep float32's digits when log p̃ carries a large constant (≈ −1000 for
  molecules): normalised weights, KL and entropy drop do not depend on it.
  """
  dtype = buffer.log_q.dtype
  n = jnp.maximum(buffer.n_valid, 1).astype(dtype)
  c_p = jnp.sum(jnp.where(buffer.valid, buffer.log_p, 0.0)) / n
  c_q = jnp.sum(jnp.where(buffer.valid, buffer.log_q, 0.0)) / n
  s = 1.0 + lam + eta
  lw = ((buffer.log_p - c_p) - (1.0 + eta) * (buffer.log_q - c_q)) / s
  lw = jnp.where(buffer.valid, lw, -jnp.inf)
  return lw, (c_p - (1.0 + eta) * c_q) / s


def normalised_log_weights(buffer: Buffer, lam: Array, eta: Array) -> Array:
  """log w̄ (``[N]``, −inf at invalid entries): log-softmax of :func:`log_weights`."""
  lw, _ = _centred_log_weights(buffer, lam, eta)
  return lw - jax.scipy.special.logsumexp(lw)


def capped_log_weights(log_wbar: Array, cap: float) -> Array:
  """Normalised log weights with no entry above ``cap`` times the uniform share.

  Every w̄_n is replaced by min(w̄_n, cap / n) (n: the entries with a finite log weight) and
  the result is normalised again (truncated importance weights). A fit that resamples its
  minibatches from w̄ then draws no one sample more than about ``cap`` times as often as a
  uniform draw would, whatever the tail of the weights.

  Args:
    log_wbar: ``[N]`` normalised log weights (−inf drops an entry).
    cap: the largest weight as a multiple of 1/n (> 1 to leave a uniform buffer unchanged).

  Returns:
    ``[N]`` normalised log weights (−inf where ``log_wbar`` is).
  """
  n = jnp.maximum(jnp.sum(jnp.isfinite(log_wbar)), 1).astype(log_wbar.dtype)
  lw = jnp.minimum(log_wbar, jnp.log(jnp.asarray(cap, log_wbar.dtype) / n))
  return lw - jax.scipy.special.logsumexp(lw)


def entropy_estimate(buffer: Buffer) -> Array:
  """H(q_i) ≈ −mean(lq) over valid entries."""
  n = jnp.maximum(buffer.n_valid, 1).astype(buffer.log_q.dtype)
  return -jnp.sum(jnp.where(buffer.valid, buffer.log_q, 0.0)) / n


def dual_stats(buffer: Buffer, lam: Array, eta: Array, eps_tr: Array,
               eps_ent: Array) -> DualStats:
  """Evaluates g(λ, η) with its gradient, Hessian and diagnostics.

  Args:
    buffer: the step's buffer (N samples of q_i).
    lam: trust-region multiplier λ ≥ 0 (scalar).
    eta: entropy multiplier η ≥ 0 (scalar).
    eps_tr: trust-region bound ε_tr.
    eps_ent: bound on the entropy decrease ε_ent.

  Returns:
    A :class:`DualStats`.
  """
  dtype = buffer.log_q.dtype
  valid = buffer.valid
  n = jnp.maximum(buffer.n_valid, 1).astype(dtype)
  s = 1.0 + lam + eta
  lw, const = _centred_log_weights(buffer, lam, eta)
  lse = jax.scipy.special.logsumexp(lw)
  log_wbar = lw - lse
  wbar = jnp.where(valid, jnp.exp(log_wbar), 0.0)
  r = jnp.where(valid, log_wbar + jnp.log(n), 0.0)  # log(N w̄)
  log_z = lse + const - jnp.log(n)
  entropy = entropy_estimate(buffer)

  # Centre lq by its valid mean before forming lq + r, so float32 keeps its digits.
  lq_c = jnp.where(valid, buffer.log_q + entropy, 0.0)
  kl = jnp.sum(wbar * r)
  u = lq_c + r  # lq + r up to the constant −H(q_i)
  mean_u = jnp.sum(wbar * u)
  # Ĥ(q_{i+1}) = −Σ w̄ (lq + r) = H(q_i) − Σ w̄ (lq_c + r)  ⇒  drop = Σ w̄ u.
  entropy_drop = mean_u

  d_r = jnp.where(valid, r - kl, 0.0)
  d_u = jnp.where(valid, u - mean_u, 0.0)
  c_rr = jnp.sum(wbar * d_r * d_r)
  c_ru = jnp.sum(wbar * d_r * d_u)
  c_uu = jnp.sum(wbar * d_u * d_u)
  hess = -jnp.array([[c_rr, c_ru], [c_ru, c_uu]]) / s

  grad = jnp.stack([kl - eps_tr, entropy_drop - eps_ent])
  value = -s * log_z - lam * eps_tr + eta * (entropy - eps_ent)
  ess = 1.0 / (n * jnp.sum(wbar * wbar))
  return DualStats(value=value, grad=grad, hess=hess, kl=kl, entropy_drop=entropy_drop,
                   log_z=log_z, ess=ess, entropy=entropy)


def dual_value(buffer: Buffer, lam: Array, eta: Array, eps_tr: Array,
               eps_ent: Array) -> Array:
  """g(λ, η) alone, written directly from its definition (a reference for tests)."""
  s = 1.0 + lam + eta
  n = jnp.maximum(buffer.n_valid, 1).astype(buffer.log_q.dtype)
  log_z = jax.scipy.special.logsumexp(log_weights(buffer, lam, eta)) - jnp.log(n)
  return -s * log_z - lam * eps_tr + eta * (entropy_estimate(buffer) - eps_ent)


def bisect_ess_floor(ess: Callable[[Array], Array], hi: Array, min_ess: float | Array,
                     n_bisect: int) -> Array:
  """The lower end of a bisection for the largest t in [0, ``hi``] with ``ess(t) ≥ min_ess``
  (``ess`` decreasing in t, ``ess(0)`` at the floor or above): after ``n_bisect`` halvings of
  [0, ``hi``], the largest t found to keep the floor (0 if none did). Whether ``hi`` itself
  keeps it is the caller's to check."""
  def body(_, lo_hi):
    lo, hi = lo_hi  # ess(lo) >= min_ess > ess(hi)
    mid = 0.5 * (lo + hi)
    ok = ess(mid) >= min_ess
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo, _ = jax.lax.fori_loop(0, n_bisect, body, (jnp.zeros_like(hi), hi))
  return lo


def lam_for_min_ess(buffer: Buffer, lam: Array, eta: Array, min_ess: float | Array, *,
                    n_bisect: int = 40) -> Array:
  """The smallest λ' ≥ λ whose weights keep a step ESS of at least ``min_ess``.

  Raising λ tempers the weights, log w = (lp − (1+η) lq) / (1 + λ + η): it moves q_{i+1}
  back towards q_i along the same path, and the step ESS rises to 1 as λ → ∞. A trust region
  in ESS beside the one in KL: a few heavy weights can leave KL̂ below ε_tr while the
  weights rest on a handful of samples, and a fit to them puts a narrow peak around each.
  Bisection on the weights' exponent τ = (1 + λ + η) / (1 + λ' + η) ∈ (0, 1]; λ itself where
  its ESS already reaches ``min_ess`` (or the buffer has no valid entry).
  """
  lw0, _ = _centred_log_weights(buffer, lam, eta)
  valid = buffer.valid
  n = jnp.maximum(buffer.n_valid, 1).astype(lw0.dtype)
  lw0 = jnp.where(valid, lw0 - jnp.max(jnp.where(valid, lw0, -jnp.inf)), -jnp.inf)

  def ess(tau):
    lw = jnp.where(valid, tau * lw0, -jnp.inf)
    log_wbar = lw - jax.scipy.special.logsumexp(lw)
    return jnp.exp(-jnp.log(n) - jax.scipy.special.logsumexp(2.0 * log_wbar))

  one = jnp.ones((), lw0.dtype)
  tau = bisect_ess_floor(ess, one, min_ess, n_bisect)
  needed = (buffer.n_valid > 0) & (ess(one) < min_ess)
  s = 1.0 + lam + eta
  return jnp.where(needed, s / jnp.maximum(tau, jnp.finfo(lw0.dtype).tiny) - 1.0 - eta, lam)
