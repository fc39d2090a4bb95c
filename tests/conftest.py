"""Shared fixtures. Tests never download anything and treat ../shared/data as read-only."""

import os
import pathlib

import jax
import pytest

from bilevel_jax.utils import paths


@pytest.fixture
def x64():
  """Runs a test in float64 (reference comparisons), restoring the previous setting."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", previous)


def _data_root():
  try:
    return paths.resolve_data_root()
  except FileNotFoundError:
    return None


@pytest.fixture(scope="session")
def data_root() -> pathlib.Path:
  root = _data_root()
  if root is None:
    pytest.skip("no data root (set BILEVEL_JAX_DATA or provide ../shared/data)")
  return root


@pytest.fixture(scope="session")
def fsdd_root(data_root) -> pathlib.Path:
  root = data_root / "fsdd"
  if not root.is_dir():
    pytest.skip(f"FSDD not found under {data_root}")
  return root


@pytest.fixture(scope="session")
def speech_commands_sample_root(data_root) -> pathlib.Path:
  root = data_root / "speech_commands_v2_sample"
  if not root.is_dir():
    pytest.skip(f"Speech Commands sample not found under {data_root}")
  return root


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
  """Caches written by tests go to a temporary folder, never the user's cache."""
  if "BILEVEL_JAX_CACHE" not in os.environ:
    os.environ["BILEVEL_JAX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
  yield
