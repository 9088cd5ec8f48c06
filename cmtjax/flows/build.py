"""Which flow a run gets: a Cartesian coupling flow, or an internal-coordinate flow for molecules."""

from __future__ import annotations

from typing import Any

from cmtjax.flows.config import FlowConfig
from cmtjax.flows.flow import Flow, make_flow


def flow_for_target(flow_kwargs: dict[str, Any], target) -> Flow:
  """Builds the flow of a run from the ``flow`` section of its config and its target.

  Args:
    flow_kwargs: ``FlowConfig`` fields other than ``dim``.
    target: the ``Target``; molecular targets carry ``target.molecule``.

  Returns:
    ``make_flow`` for Cartesian coordinates, ``make_internal_flow`` for internal ones
    (``coordinates="auto"`` picks internal coordinates for molecular targets).

  Raises:
    ValueError: internal coordinates asked for on a target that is not a molecule.
  """
  config = FlowConfig(dim=target.dim, **flow_kwargs)
  internal = (config.coordinates == "internal"
              or (config.coordinates == "auto" and target.molecule is not None))
  if not internal:
    return make_flow(config)
  if target.molecule is None:
    raise ValueError(f"flow.coordinates='internal' needs a molecular target; "
                     f"{target.name!r} is not one")
  from cmtjax.flows.internal_coordinates import make_internal_coordinates
  from cmtjax.flows.molecular import make_internal_flow
  ic = make_internal_coordinates(target.molecule.zmatrix, bond_width=config.bond_width,
                                 angle_width=config.angle_width,
                                 offset_width=config.offset_width)
  return make_internal_flow(config, ic)
