"""Real FSDD log-mel inputs for kernel tests, the oracle comparison and benchmarks."""
from __future__ import annotations

import os
import pathlib

import jax.numpy as jnp
import numpy as np

from bilevel_jax import audio
from bilevel_jax.data import decode
from bilevel_jax.utils import paths


def fsdd_files(data_root: str | os.PathLike | None = None, *, split: str = "train") -> list[pathlib.Path]:
  """Sorted FSDD wavs of a split (train: take index 5-49, test: 0-4)."""
  if split not in ("train", "test"):
    raise ValueError(f"split={split!r}; expected 'train' or 'test'.")
  rec = paths.resolve_data_root(data_root) / "fsdd" / "recordings"
  if not rec.is_dir():
    raise FileNotFoundError(f"FSDD recordings folder {rec} not found; expected <data_root>/fsdd/recordings.")
  files = []
  for f in sorted(rec.glob("*.wav")):
    parts = f.stem.split("_")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
      raise ValueError(f"FSDD file {f} is not named {{digit}}_{{speaker}}_{{take}}.wav.")
    take = int(parts[2])
    if (take >= 5) == (split == "train"):
      files.append(f)
  return files


def fsdd_log_mels(n: int, *, seed: int = 0, data_root: str | os.PathLike | None = None,
                  split: str = "train") -> np.ndarray:
  """n FSDD clips drawn without replacement (NumPy seed), as `audio.featurize` log-mels.

  Returns:
    (n, 32, 32, 1) float32, the network inputs of the whole project.
  """
  files = fsdd_files(data_root, split=split)
  if not 1 <= n <= len(files):
    raise ValueError(f"n={n}; expected 1 <= n <= {len(files)} FSDD {split} clips.")
  idx = np.sort(np.random.default_rng(seed).choice(len(files), n, replace=False))
  waves = np.stack([decode.load_clip(files[i]) for i in idx])
  return np.asarray(audio.featurize(jnp.asarray(waves)), np.float32)
