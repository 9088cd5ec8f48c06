"""Targets: unnormalised densities cmtjax learns to sample (synthetic and molecular).

Names are exported lazily: the registry (names, ``make_target``) imports no jax until a
target is built.
"""

from __future__ import annotations

from cmtjax._lazy import lazy_exports
from cmtjax.targets.registry import (
    MOLECULAR_TARGET_NAMES,
    SYNTHETIC_TARGET_NAMES,
    TARGET_NAMES,
    make_target,
    resolve_target_spec,
    target_kind,
)

_EXPORTS = {"Target": "base", "check_target": "base", "double_well": "double_well", "gmm": "gmm",
            "many_well": "many_well"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["MOLECULAR_TARGET_NAMES", "SYNTHETIC_TARGET_NAMES", "TARGET_NAMES", "make_target",
           "resolve_target_spec", "target_kind", *_EXPORTS]
