"""Targets: unnormalised densities cmtjax learns to sample (synthetic and molecular)."""

from __future__ import annotations

from cmtjax.targets.base import Target
from cmtjax.targets.double_well import double_well
from cmtjax.targets.gmm import gmm
from cmtjax.targets.many_well import many_well
from cmtjax.targets.registry import (
    MOLECULAR_TARGET_NAMES,
    SYNTHETIC_TARGET_NAMES,
    TARGET_NAMES,
    make_target,
)

__all__ = [
    "MOLECULAR_TARGET_NAMES",
    "SYNTHETIC_TARGET_NAMES",
    "TARGET_NAMES",
    "Target",
    "double_well",
    "gmm",
    "make_target",
    "many_well",
]
