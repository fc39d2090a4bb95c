"""Labeled-set bookkeeping: class-covering initial pool, PRNG streams, round schedule."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np


class Streams(NamedTuple):
  """Named PRNG streams of one seed; round r uses `fold_in(stream, r)` (identical on resume).

  The streams do not depend on the strategy, so for a given seed all strategies start from
  the same initial pool and the same round-0 model (common random numbers).
  """

  pool: jax.Array  # initial labeled pool
  train: jax.Array  # model init and data order of each round's training
  predict: jax.Array  # augmentation draws for augmented predictions
  select: jax.Array  # the strategy's own randomness
  bank: jax.Array  # augmented copies of labeled points (bilevel)


def streams(seed: int) -> Streams:
  return Streams(*jax.random.split(jax.random.key(seed), len(Streams._fields)))


def round_key(stream: jax.Array, r: int) -> jax.Array:
  return jax.random.fold_in(stream, r)


def initial_pool(key: jax.Array, labels: np.ndarray, size: int, num_classes: int) -> np.ndarray:
  """Random labeled pool of `size` points with every class represented at least once.

  One random point of each class comes first (in class order), then random others.

  Args:
    key: PRNG key.
    labels: (N,) int labels of the training set.
    size: pool size, >= num_classes.
    num_classes: C.

  Returns:
    (size,) int32 distinct training-set indices.
  """
  labels = np.asarray(labels)
  present = np.unique(labels)
  if size < num_classes:
    raise ValueError(
      f"The initial pool ({size}) must have at least one point per class ({num_classes} classes)."
    )
  if present.size and (present[0] < 0 or present[-1] >= num_classes):
    # Otherwise every extra class would add a point beyond `size`.
    raise ValueError(f"Labels must lie in [0, {num_classes}); found {present.tolist()}.")
  if len(present) < num_classes:
    missing = sorted(set(range(num_classes)) - set(present.tolist()))
    raise ValueError(f"Classes {missing} have no training points; cannot cover every class.")
  if size > labels.shape[0]:
    raise ValueError(
      f"The initial pool ({size}) is larger than the training set ({labels.shape[0]})."
    )
  order = np.asarray(jax.random.permutation(key, labels.shape[0]))
  # First occurrence of each class in the random order = a uniform random point of that class.
  _, first = np.unique(labels[order], return_index=True)
  chosen = order[np.sort(first)]
  chosen = chosen[np.argsort(labels[chosen], kind="stable")]
  rest = order[~np.isin(order, chosen)]
  return np.concatenate([chosen, rest[: size - num_classes]]).astype(np.int32)


def schedule(initial: int, budget: int, batch: int) -> list[int]:
  """Labeled-set sizes of the rounds, e.g. (10, 60, 10) -> [10, 20, ..., 60]."""
  if batch < 1:
    raise ValueError(f"al.batch_size_per_round={batch}; expected >= 1.")
  if initial < 1:
    raise ValueError(f"al.initial={initial}; expected >= 1.")
  if budget < initial:
    raise ValueError(f"al.budget={budget} is smaller than the initial pool al.initial={initial}.")
  if (budget - initial) % batch:
    raise ValueError(
      f"al.budget - al.initial = {budget - initial} is not a multiple of "
      f"al.batch_size_per_round={batch}."
    )
  return list(range(initial, budget + 1, batch))
