"""Real FSDD log-mel inputs for kernel tests, the oracle comparison and benchmarks."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from bilevel_jax import audio
from bilevel_jax import data


def fsdd_log_mels(
  n: int, *, seed: int = 0, data_root: str | os.PathLike | None = None, split: str = "train"
) -> np.ndarray:
  """n clips of an FSDD split (the official one, `data.load_dataset`) drawn without replacement
  with a NumPy seed, as `audio.featurize` log-mels (no standardization).

  Returns:
    (n, 32, 32, 1) float32, the network inputs of the whole project.
  """
  if split not in ("train", "test"):
    raise ValueError(f"split={split!r}; expected 'train' or 'test'.")
  waves = getattr(data.load_dataset("fsdd", data_root, progress=False), split).waveforms
  if not 1 <= n <= len(waves):
    raise ValueError(f"n={n}; expected 1 <= n <= {len(waves)} FSDD {split} clips.")
  idx = np.sort(np.random.default_rng(seed).choice(len(waves), n, replace=False))
  return np.asarray(audio.featurize(jnp.asarray(waves[idx])), np.float32)
