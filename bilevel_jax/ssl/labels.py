"""Labeled index sets for experiments (host-side NumPy, seeded)."""

from __future__ import annotations

import numpy as np


def class_covering_indices(
  labels: np.ndarray, num_labels: int, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
  """(num_labels,) sorted indices: one uniform draw per class, the rest uniform without
  replacement from the remaining clips, so every class is represented."""
  labels = np.asarray(labels)
  if num_labels < num_classes:
    raise ValueError(f"label count {num_labels} cannot cover {num_classes} classes.")
  if num_labels > len(labels):
    raise ValueError(f"label count {num_labels} exceeds the {len(labels)} training clips.")
  missing = [k for k in range(num_classes) if not np.any(labels == k)]
  if missing:
    raise ValueError(f"classes {missing} have no training clip; cannot cover every class.")
  first = np.array([rng.choice(np.flatnonzero(labels == k)) for k in range(num_classes)])
  rest = np.setdiff1d(np.arange(len(labels)), first)
  extra = rng.choice(rest, num_labels - num_classes, replace=False)
  return np.sort(np.concatenate([first, extra])).astype(np.int32)


def labeled_sets(
  labels: np.ndarray, num_labels: int, num_seeds: int, num_classes: int, seed: int
) -> np.ndarray:
  """(S, L) labeled indices; seed s at label count L is the same for every method."""
  return np.stack(
    [
      class_covering_indices(
        labels, num_labels, num_classes, np.random.default_rng([seed, s, num_labels])
      )
      for s in range(num_seeds)
    ]
  )
