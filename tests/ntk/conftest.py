"""Real FSDD log-mel inputs shared by the kernel tests (computed once per session)."""

import functools

import numpy as np
import pytest

from bilevel_jax.testing import inputs


@functools.lru_cache(maxsize=None)
def _log_mels(root: str, n: int, seed: int) -> np.ndarray:
  return inputs.fsdd_log_mels(n, seed=seed, data_root=root)


@pytest.fixture(scope="session")
def fsdd_log_mels(fsdd_root):
  """fsdd_log_mels(n, seed=0) -> (n, 32, 32, 1) float32 real FSDD inputs."""
  return lambda n, seed=0: _log_mels(str(fsdd_root.parent), n, seed).copy()


def downsample(x: np.ndarray, factor: int) -> np.ndarray:
  """(N, H, W, C) -> (N, H / f, W / f, C) by block averaging (cheaper kernels in tests)."""
  n, h, w, c = x.shape
  return x.reshape(n, h // factor, factor, w // factor, factor, c).mean((2, 4))
