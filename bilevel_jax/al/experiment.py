"""What an AL experiment fixes before any training: the plan of its config, and its data.

`plan(config)` checks everything that needs no data (strategies, seeds, schedule, training
and strategy settings); `load_data` reads the dataset (or a random subset) and the background
noise, and `check_data` checks the config against it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import ml_collections
import numpy as np

from bilevel_jax import data as data_lib
from bilevel_jax import strategies
from bilevel_jax.al import pool as pool_lib
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.strategies import inputs as strategy_inputs

PAPER_STRATEGIES = ("uniform", "max_entropy", "kcenter", "consistency", "bilevel")


class Data(NamedTuple):
  """Host-side training/test data of one experiment."""

  name: str
  num_classes: int
  train_waveforms: np.ndarray  # (N, 16000)
  train_labels: np.ndarray  # (N,)
  test_waveforms: np.ndarray  # (M, 16000)
  test_labels: np.ndarray  # (M,)
  noise: np.ndarray  # (K, L)


class Plan(NamedTuple):
  strategies: tuple[str, ...]
  seeds: tuple[int, ...]
  schedule: tuple[int, ...]


def parse_strategies(value: str) -> tuple[str, ...]:
  """'all' -> the paper's five; 'a,b' -> ('a', 'b'); unknown names raise ValueError."""
  if not isinstance(value, str) or not value.strip():
    raise ValueError(
      f"config.strategy={value!r}; expected a strategy name, a comma-separated "
      f"list or 'all' (known: {list(strategies.available())})."
    )
  names = (
    PAPER_STRATEGIES
    if value.strip() == "all"
    else tuple(v.strip() for v in value.split(",") if v.strip())
  )
  unknown = [n for n in names if n not in strategies.available()]
  if unknown:
    raise ValueError(
      f"config.strategy={value!r}: unknown strategy {unknown}; known: "
      f"{list(strategies.available())} or 'all'."
    )
  if len(set(names)) != len(names):
    raise ValueError(f"config.strategy={value!r} names a strategy twice.")
  return names


def plan(config: ml_collections.ConfigDict) -> Plan:
  """Checks everything that needs no data (raises ValueError naming the config entry)."""
  names = parse_strategies(config.strategy)
  if config.seed >= 0:
    seeds = (int(config.seed),)
  elif config.seed == -1 and config.num_seeds >= 1:
    seeds = tuple(range(config.num_seeds))
  else:
    raise ValueError(
      f"config.seed={config.seed}, config.num_seeds={config.num_seeds}; expected "
      "seed >= 0 (one seed) or seed = -1 with num_seeds >= 1 (seeds 0..n-1)."
    )
  sched = pool_lib.schedule(config.al.initial, config.al.budget, config.al.batch_size_per_round)
  ssl_train.TrainConfig.from_config(config.train)  # unknown training keys fail here
  for n in names:
    strategy_inputs.check_config(n, config)
  return Plan(names, seeds, tuple(sched))


def load_data(config: ml_collections.ConfigDict, on_error: str = "raise") -> Data:
  """Loads the dataset (optionally a random subset) and the background noise.

  on_error: "raise" (one error naming every bad file) or "skip" them (`data.load_dataset`).
  """
  # Noise first: it is small, so a broken noise file fails before a long first decode.
  try:
    noise = data_lib.load_background_noise(config.data_root or None)
    ds = data_lib.load_dataset(
      config.dataset, config.data_root or None, progress=config.progress, on_error=on_error
    )
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(
      f"config.dataset={config.dataset!r} (config.data_root="
      f"{config.data_root or 'default'}) cannot be loaded: {e}"
    ) from e
  train_w, train_y = ds.train.waveforms, np.asarray(ds.train.labels, np.int32)
  test_w, test_y = ds.test.waveforms, np.asarray(ds.test.labels, np.int32)
  for name, total in (("train", len(train_y)), ("test", len(test_y))):
    if not 0 <= config.subset[name] <= total:
      raise ValueError(
        f"config.subset.{name}={config.subset[name]}; expected 0 (all clips) to "
        f"{total} (the {name} split of {ds.name})."
      )
  key = jax.random.key(config.subset.seed)
  if config.subset.train:
    idx = np.sort(
      np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), len(train_y)))[
        : config.subset.train
      ]
    )
    train_w, train_y = train_w[idx], train_y[idx]
  if config.subset.test:
    idx = np.sort(
      np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), len(test_y)))[
        : config.subset.test
      ]
    )
    test_w, test_y = test_w[idx], test_y[idx]
  return Data(
    ds.name,
    len(ds.class_names),
    np.asarray(train_w, np.float32),
    train_y,
    np.asarray(test_w, np.float32),
    test_y,
    np.asarray(noise, np.float32),
  )


def check_data(config: ml_collections.ConfigDict, data: Data) -> None:
  """Raises ValueError naming the config entry that the loaded data cannot satisfy."""
  n = data.train_labels.shape[0]
  if config.al.initial < data.num_classes:
    raise ValueError(
      f"config.al.initial={config.al.initial} cannot cover the "
      f"{data.num_classes} classes of {data.name}."
    )
  if config.al.budget > n:
    raise ValueError(
      f"config.al.budget={config.al.budget} is larger than the training set "
      f"({n} clips), so the last batch of "
      f"b={config.al.batch_size_per_round} would not fit in "
      "the pool."
    )
  missing = sorted(set(range(data.num_classes)) - set(np.unique(data.train_labels).tolist()))
  if missing:
    raise ValueError(
      f"The training set of {data.name} has no clips of classes {missing} "
      "(config.subset.train too small?)."
    )
