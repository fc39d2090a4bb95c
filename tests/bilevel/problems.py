"""Tiny synthetic selection problems shared by the bilevel tests (fixed seeds)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Problem(NamedTuple):
  pool_z: np.ndarray        # (P, m) clean features
  pool_bank: np.ndarray     # (P, A, m) augmented copies
  pseudo: np.ndarray        # (P, c) soft pseudo-labels
  classes: np.ndarray       # (P,) true classes
  labeled_idx: np.ndarray   # (L,)
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
  return Problem(pool_z.astype(dtype), pool_bank.astype(dtype), pseudo.astype(dtype), classes,
                 labeled_idx.astype(np.int32), classes[labeled_idx].astype(np.int32))
