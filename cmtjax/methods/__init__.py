"""Training methods, each a :class:`~cmtjax.train.state.Method` for the one loop.

Every method is one module with a ``SPEC`` (:class:`~cmtjax.methods.registry.MethodSpec`)
listed in :data:`~cmtjax.methods.registry.METHOD_MODULES`. Names are exported lazily, so
importing this package (or the registry) does not import jax.
"""

from __future__ import annotations

from cmtjax._lazy import lazy_exports
from cmtjax.methods.registry import (METHOD_MODULES, MethodSpec, evals_per_step, get_method,
                                     make_method, method_names, register)

_EXPORTS = {
    "CMTConfig": "cmt", "CMTInfo": "cmt", "CMTState": "cmt", "make_cmt": "cmt",
    "FABConfig": "fab", "FABInfo": "fab", "FABState": "fab", "make_fab": "fab",
    "ForwardKLConfig": "forward_kl", "ForwardKLInfo": "forward_kl",
    "make_forward_kl": "forward_kl",
    "ReverseKLConfig": "reverse_kl", "ReverseKLInfo": "reverse_kl",
    "make_reverse_kl": "reverse_kl",
    "TABGConfig": "tabg", "TABGInfo": "tabg", "make_tabg": "tabg",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["METHOD_MODULES", "MethodSpec", "evals_per_step", "get_method", "make_method",
           "method_names", "register", *_EXPORTS]
