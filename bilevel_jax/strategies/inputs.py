"""What a strategy needs beyond the model's outputs, built from its own config block.

The AL loop calls `check_config(name, config)` before loading data and `prepare(name, config,
data)` once per experiment, then per round `Prepared.context(seed, labeled, stream)` for the
strategy's RoundContext fields and `Prepared.options` as its keyword options. It never reads a
strategy's config block itself: the registered strategy names the block (`config_block`) and
builds its inputs in its `prepare` hook (see `strategies.bilevel`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from bilevel_jax.strategies import base


class Prepared(NamedTuple):
  """A strategy's inputs for one experiment.

  Attributes:
    options: keyword options of the strategy's `select` (static or traced values).
    context: `context(seed, labeled_idx (L,), stream key) -> {RoundContext field: array}`
      for one seed and round (e.g. features, bank, bank_params), or None.
    builder: the object that built the inputs (bilevel: `ntk.features.KernelFeatures`), for
      experiments that need more of it (e.g. features of a test split), or None.
  """

  options: dict[str, Any]
  context: Callable[[int, np.ndarray, jax.Array], dict[str, Any]] | None = None
  builder: Any = None


def config_block(name: str, config: Any) -> Any:
  """The config entry named by strategy `name`'s `config_block`, or None."""
  block_name = base.get(name).config_block
  if block_name is None:
    return None
  if block_name not in config:
    raise ValueError(f"Strategy {name!r} reads config.{block_name}, which the config lacks.")
  return config[block_name]


def block_options(name: str, block: Any) -> dict[str, Any]:
  """The entries of `block` named like keyword options of strategy `name`."""
  if block is None:
    return {}
  return {k: block[k] for k in base.get(name).options if k in block}


def check_config(name: str, config: Any) -> None:
  """Runs strategy `name`'s config check on its block (ValueError naming the entry)."""
  strategy = base.get(name)
  if strategy.check_config is not None:
    strategy.check_config(config_block(name, config))


def prepare(name: str, config: Any, data: Any, *, progress: bool = False) -> Prepared:
  """Builds strategy `name`'s inputs for `data` (an object with at least `name`,
  `train_waveforms` (N, 16000) and `noise` (K, L); the AL loop's `Data`)."""
  strategy = base.get(name)
  block = config_block(name, config)
  if strategy.prepare is None:
    return Prepared(block_options(name, block))
  return strategy.prepare(block, data, progress=progress)
