"""Shared test helpers: the real assets of ``$JAXGC_ASSETS``.

A test that needs an asset skips, saying why, only when ``JAXGC_ASSETS`` is unset, and fails
naming the path when it is set but the file is missing (CI sets it).
"""

import os
import pathlib

import pytest


def assets_root() -> pathlib.Path:
  """``$JAXGC_ASSETS``; skips the calling test when it is unset."""
  root = os.environ.get("JAXGC_ASSETS")
  if not root:
    pytest.skip("JAXGC_ASSETS is unset: real checkpoints and data not available")
  return pathlib.Path(root)


def require_asset(rel: str) -> pathlib.Path:
  """The asset ``rel`` under ``$JAXGC_ASSETS``; skip if unset, fail if missing."""
  path = assets_root() / rel
  if not path.is_file():
    pytest.fail(f"JAXGC_ASSETS is set but the asset is missing: {path}")
  return path
