"""Fixtures of the molecular tests."""

from __future__ import annotations

import pytest

from cmtjax.targets.molecules import MOLECULAR_SYSTEMS


@pytest.fixture(params=sorted(MOLECULAR_SYSTEMS))
def system_name(request):
  return request.param
