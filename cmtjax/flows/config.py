"""Typed, validated configuration of a coupling normalizing flow."""

from __future__ import annotations

import dataclasses
import math

COUPLINGS = ("spline", "affine")
PERMUTATIONS = ("alternate", "random")
ACTIVATIONS = ("gelu", "silu", "tanh")
SPLINE_BACKENDS = ("cmtjax", "distrax")
COORDINATES = ("auto", "cartesian", "internal")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_finite(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and value > 0)


@dataclasses.dataclass(frozen=True)
class FlowConfig:
  """Configuration of a coupling flow on R^dim.

  The flow maps z ~ N(0, I) through ``n_layers`` coupling layers to standardised
  coordinates y, then scales x = base_scale * y. At initialisation every coupling
  is the identity, so the flow density is exactly N(0, base_scale^2 I) in x-space.

  Attributes:
    dim: dimension of x (>= 2).
    coupling: ``"spline"`` (rational-quadratic spline on [-box, box], identity
      with unit slope outside) or ``"affine"`` (shift and bounded log-scale).
    n_layers: number of coupling layers (>= 1).
    hidden: widths of the conditioner MLP hidden layers (may be empty).
    n_bins: number of spline bins (spline coupling only, >= 2).
    box: half-width of the spline interval, in standardised (y) units. It also
      sets the range of the conditioner inputs, which are soft-clipped to
      2 * box * tanh(y / (2 * box)) (for both couplings).
    base_scale: standard deviation of the base distribution in x-space.
    permutation: ``"alternate"``: layers alternately transform the second and the
      first part of a fixed split of the coordinates; ``"random"``: each pair of
      layers works on its own fixed random permutation of the coordinates (drawn
      with ``seed_permutation``) and transforms both halves of it in turn, so that
      every coordinate is transformed once per pair of layers.
    seed_permutation: seed of the random permutations.
    activation: smooth activation of the conditioner MLPs (``"gelu"``,
      ``"silu"`` or ``"tanh"``).
    max_log_scale: bound of the affine log-scale, log_scale = m * tanh(raw / m)
      (affine coupling only).
    spline_backend: ``"cmtjax"`` (batched evaluation in
      ``cmtjax.flows.splines``, faster) or ``"distrax"``
      (``distrax.RationalQuadraticSpline``); both compute the same function from
      the same parameters.
    coordinates: ``"cartesian"`` (the flow above on R^dim), ``"internal"`` (molecules
      only: splines on scaled Z-matrix coordinates in [-1, 1], see
      ``cmtjax.flows.molecular``) or ``"auto"`` (internal for molecular targets,
      Cartesian otherwise).
    bond_width, angle_width, offset_width: internal coordinates only: half-widths
      (nm, rad, rad) of the intervals of bond lengths, bond angles and offset
      dihedrals around the reference structure (``make_internal_coordinates``).
    prior_std: internal coordinates only: standard deviation of the truncated-normal
      prior of bonds, angles and offset dihedrals on their [0, 1]-scaled interval
      (the free dihedrals have a uniform prior).
  """

  dim: int
  coupling: str = "spline"
  n_layers: int = 8
  hidden: tuple[int, ...] = (128, 128)
  n_bins: int = 16
  box: float = 4.0
  base_scale: float = 1.0
  permutation: str = "alternate"
  seed_permutation: int = 0
  activation: str = "gelu"
  max_log_scale: float = 3.0
  spline_backend: str = "cmtjax"
  coordinates: str = "auto"
  bond_width: float = 0.03
  angle_width: float = 0.6
  offset_width: float = 1.0
  prior_std: float = 0.1

  def __post_init__(self):
    if self.coordinates not in COORDINATES:
      raise ValueError(
          f"FlowConfig.coordinates must be one of {COORDINATES}, got "
          f"coordinates={self.coordinates!r}")
    for name in ("bond_width", "angle_width", "offset_width", "prior_std"):
      if not _is_positive_finite(getattr(self, name)):
        raise ValueError(
            f"FlowConfig.{name} must be a finite number > 0, got "
            f"{name}={getattr(self, name)!r}")
    if not _is_int(self.dim) or self.dim < 2:
      raise ValueError(
          f"FlowConfig.dim must be an integer >= 2 (a coupling needs two "
          f"parts), got dim={self.dim!r}")
    if self.coupling not in COUPLINGS:
      raise ValueError(
          f"FlowConfig.coupling must be one of {COUPLINGS}, got "
          f"coupling={self.coupling!r}")
    if not _is_int(self.n_layers) or self.n_layers < 1:
      raise ValueError(
          f"FlowConfig.n_layers must be an integer >= 1, got "
          f"n_layers={self.n_layers!r}")
    if isinstance(self.hidden, list):
      object.__setattr__(self, "hidden", tuple(self.hidden))
    if (not isinstance(self.hidden, tuple)
        or not all(_is_int(h) and h > 0 for h in self.hidden)):
      raise ValueError(
          f"FlowConfig.hidden must be a tuple of positive integers, got "
          f"hidden={self.hidden!r}")
    if not _is_int(self.n_bins) or self.n_bins < 2:
      raise ValueError(
          f"FlowConfig.n_bins must be an integer >= 2, got "
          f"n_bins={self.n_bins!r}")
    if not _is_positive_finite(self.box):
      raise ValueError(
          f"FlowConfig.box must be a finite number > 0, got box={self.box!r}")
    if not _is_positive_finite(self.base_scale):
      raise ValueError(
          f"FlowConfig.base_scale must be a finite number > 0, got "
          f"base_scale={self.base_scale!r}")
    if self.permutation not in PERMUTATIONS:
      raise ValueError(
          f"FlowConfig.permutation must be one of {PERMUTATIONS}, got "
          f"permutation={self.permutation!r}")
    if not _is_int(self.seed_permutation):
      raise ValueError(
          f"FlowConfig.seed_permutation must be an integer, got "
          f"seed_permutation={self.seed_permutation!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"FlowConfig.activation must be one of {ACTIVATIONS}, got "
          f"activation={self.activation!r}")
    if not _is_positive_finite(self.max_log_scale):
      raise ValueError(
          f"FlowConfig.max_log_scale must be a finite number > 0, got "
          f"max_log_scale={self.max_log_scale!r}")

    if self.spline_backend not in SPLINE_BACKENDS:
      raise ValueError(
          f"FlowConfig.spline_backend must be one of {SPLINE_BACKENDS}, got "
          f"spline_backend={self.spline_backend!r}")
    if self.coupling == "spline" and self.n_bins * 1e-4 > 2.0 * self.box:
      raise ValueError(
          f"FlowConfig.n_bins={self.n_bins} bins of minimum size 1e-4 do not fit "
          f"in [-box, box] with box={self.box!r}")

  def to_dict(self) -> dict:
    """JSON-serialisable dictionary of the fields (``hidden`` as a list)."""
    d = dataclasses.asdict(self)
    d["hidden"] = list(self.hidden)
    return d
