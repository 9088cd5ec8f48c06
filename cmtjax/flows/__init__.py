"""Normalizing flows of cmtjax: coupling flows as pure functions over params."""

from cmtjax.flows.build import flow_for_target
from cmtjax.flows.conditioner import MLPConditioner
from cmtjax.flows.config import FlowConfig
from cmtjax.flows.couplings import CouplingLayout, coupling_layouts
from cmtjax.flows.flow import Flow, make_flow, standard_normal_log_prob
from cmtjax.flows.splines import RationalQuadraticSpline

__all__ = [
    "CouplingLayout",
    "Flow",
    "FlowConfig",
    "MLPConditioner",
    "RationalQuadraticSpline",
    "coupling_layouts",
    "flow_for_target",
    "make_flow",
    "standard_normal_log_prob",
]
