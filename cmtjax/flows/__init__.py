"""Normalizing flows of cmtjax: coupling flows as pure functions over params."""

from cmtjax.flows.build import flow_for_target
from cmtjax.flows.conditioner import MLPConditioner
from cmtjax.flows.config import FlowConfig
from cmtjax.flows.couplings import Coupling, cartesian_couplings
from cmtjax.flows.flow import Flow, make_flow, standard_normal_log_prob
from cmtjax.flows.splines import RationalQuadraticSpline

__all__ = [
    "Coupling",
    "Flow",
    "FlowConfig",
    "MLPConditioner",
    "RationalQuadraticSpline",
    "cartesian_couplings",
    "flow_for_target",
    "make_flow",
    "standard_normal_log_prob",
]
