"""Tiny synthetic selection problems shared by the bilevel tests (fixed seeds)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Problem(NamedTuple):
  pool_z: np.ndarray  # (P, m) clean features
  pool_bank: np.ndarray  # (P, A, m) augmented copies
  pseudo: np.ndarray  # (P, c) soft pseudo-labels
  classes: np.ndarray  # (P,) true classes
  labeled_idx: np.ndarray  # (L,)
  labeled_labels: np.ndarray  # (L,)


def make_problem(seed=0, p=24, m=5, c=3, a=4, n_labeled=3, dtype=np.float64) -> Problem:
  """Gaussian class clusters; pseudo-labels are noisy soft predictions of the true class."""
  rng = np.random.default_rng(seed)
  centers = 1.5 * rng.normal(size=(c, m))
  classes = rng.integers(0, c, p)
  pool_z = centers[classes] + rng.normal(size=(p, m))
  pool_bank = pool_z[:, None, :] + 0.3 * rng.normal(size=(p, a, m))
  logits = rng.normal(size=(p, c)) + 2.0 * np.eye(c)[classes]
  pseudo = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  labeled_idx = rng.choice(p, n_labeled, replace=False)
  return Problem(
    pool_z.astype(dtype),
    pool_bank.astype(dtype),
    pseudo.astype(dtype),
    classes,
    labeled_idx.astype(np.int32),
    classes[labeled_idx].astype(np.int32),
  )


def fsdd_ntk_problem(
  data_root: str, *, n: int = 120, m: int = 24, n_labeled: int = 8, seed: int = 0, dtype=np.float64
) -> Problem:
  """A small real-feature problem: n FSDD training clips, log-mels block-averaged to 8 x 8, the
  depth-10 WRN NTK to m landmarks (every (n // m)-th clip), Nystrom features; the A = 3
  augmented copies are the log-mels shifted in time by 1, -1 and 2 frames. Pseudo-labels are
  noisy soft predictions of the true digit (c = 10). ~30 s on 2 CPU cores (decoding + kernel).
  """
  from bilevel_jax import data  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ntk import kernel_matrix, nystrom  # pylint: disable=g-import-not-at-top
  from bilevel_jax.testing import inputs  # pylint: disable=g-import-not-at-top

  x = inputs.fsdd_log_mels(n, seed=seed, data_root=data_root)
  labels = np.asarray(data.load_dataset("fsdd", data_root, progress=False).train.labels)
  idx = np.sort(np.random.default_rng(seed).choice(len(labels), n, replace=False))
  classes = labels[idx]  # the clips fsdd_log_mels draws (same seed, same rule)
  xs = x.reshape(n, 8, 4, 8, 4, 1).mean((2, 4))
  copies = [np.roll(xs, s, axis=2) for s in (1, -1, 2)]
  landmarks = xs[np.arange(0, n, n // m)[:m]]
  k = kernel_matrix.kernel_matrix(
    np.concatenate([xs] + copies), landmarks, depth=10, progress=False
  )
  k_uu = kernel_matrix.kernel_matrix(landmarks, depth=10, progress=False)
  proj = np.asarray(nystrom.fit_nystrom(k_uu).projection, np.float64)
  z = (np.asarray(k, np.float64) @ proj).reshape(4, n, m)
  rng = np.random.default_rng(seed + 1)
  c = 10
  logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[classes]
  pseudo = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  labeled_idx = rng.choice(n, n_labeled, replace=False)
  return Problem(
    z[0].astype(dtype),
    np.moveaxis(z[1:], 0, 1).astype(dtype),
    pseudo.astype(dtype),
    classes,
    labeled_idx.astype(np.int32),
    classes[labeled_idx].astype(np.int32),
  )
