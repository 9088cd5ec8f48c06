"""JSON for numpy values: the one ``default=`` hook every file writer of cmtjax uses."""

from __future__ import annotations

import numpy as np


def json_default(o):
  """``json.dumps(..., default=json_default)``: numpy scalars, booleans and arrays as Python."""
  if isinstance(o, (np.floating, np.integer, np.bool_)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")
