"""The settings of a pick-statistics run (`al.pick_stats`): seeds, variants and labeled set.

All checks run before any compute and raise ValueError naming the config entry.
"""

from __future__ import annotations

import copy
import json
import pathlib

import ml_collections
import numpy as np

from bilevel_jax import strategies
from bilevel_jax.al import pool as pool_lib
from bilevel_jax.al import results
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.strategies import inputs as strategy_inputs
from bilevel_jax.utils import io

TEST_SEEDS = range(6)  # the seeds of the committed comparisons: never used to choose variants


def parse_seeds(value: str) -> tuple[int, ...]:
  """'100-105' -> (100, ..., 105); '100,102' -> (100, 102)."""
  try:
    if "-" in value.strip().lstrip("-"):
      lo, hi = (int(v) for v in value.split("-"))
      seeds = tuple(range(lo, hi + 1))
    else:
      seeds = tuple(int(v) for v in value.split(",") if v.strip())
  except ValueError:
    seeds = ()
  if not seeds or any(s < 0 for s in seeds):
    raise ValueError(f"config.seeds={value!r}; expected 'a-b' or 'a,b,c' with seeds >= 0.")
  return seeds


def check_config(
  config: ml_collections.ConfigDict, variants: str | dict | None = None
) -> tuple[tuple[int, ...], dict]:
  """Seeds and variants (`variants`, else config.variants); ValueError naming the entry before
  any compute."""
  seeds = parse_seeds(config.seeds)
  test = sorted(set(seeds) & set(TEST_SEEDS))
  if test and not config.allow_test_seeds:
    raise ValueError(
      f"config.seeds={config.seeds!r} includes {test}, the seeds of the committed "
      "comparisons; variants must be chosen on development seeds (e.g. 100-105). "
      "Set config.allow_test_seeds=True only to reproduce a committed round."
    )
  variants = variant_specs(config.variants if variants is None else variants)
  src = config.labeled.source
  if src != "uniform":
    for seed in seeds:
      if not pathlib.Path(src.format(seed=seed)).exists():
        raise ValueError(
          f"config.labeled.source={src!r}: no file {src.format(seed=seed)}; "
          "expected 'uniform' or a result JSON path ('{seed}' is replaced)."
        )
  elif config.labeled.num_labels < 1:
    raise ValueError(f"config.labeled.num_labels={config.labeled.num_labels}; expected >= 1.")
  ssl_train.TrainConfig.from_config(config.train)
  for v in variants.values():
    strategy_inputs.check_config(v["strategy"], variant_config(config, v))
  return seeds, variants


def variant_specs(raw: str | dict | ml_collections.ConfigDict) -> dict[str, dict]:
  """{variant name: {strategy, options, block}} from config.variants (a JSON string, dict or
  ConfigDict), with unknown strategies and malformed entries rejected."""
  if isinstance(raw, str):
    try:
      raw = json.loads(raw)
    except json.JSONDecodeError as e:
      raise ValueError(f"variants is not valid JSON ({e}): {raw!r}") from None
  elif isinstance(raw, ml_collections.ConfigDict):
    raw = raw.to_dict()
  if not isinstance(raw, dict) or not raw:
    raise ValueError(
      f"variants={raw!r}; expected {{name: {{strategy, options, "
      "block}}}} with at least one variant."
    )
  out = {}
  for name, v in raw.items():
    v = dict(v or {})
    extra = sorted(set(v) - {"strategy", "options", "block"})
    if extra or "strategy" not in v:
      raise ValueError(
        f"variants[{name!r}]={v}; expected keys strategy (required), "
        f"options, block (got unknown {extra})."
      )
    strategy = strategies.get(v["strategy"])  # unknown names fail here, listing the known ones
    if v.get("block") and strategy.config_block is None:
      raise ValueError(
        f"variants[{name!r}] overrides config block entries {v['block']}, but "
        f"strategy {v['strategy']!r} has no config block."
      )
    out[name] = {
      "strategy": v["strategy"],
      "options": dict(v.get("options") or {}),
      "block": dict(v.get("block") or {}),
    }
  return out


def variant_config(config, variant) -> ml_collections.ConfigDict:
  """`config` with the variant's overrides of its strategy's config block."""
  if not variant["block"]:
    return config
  c = copy.deepcopy(config)
  name = strategies.get(variant["strategy"]).config_block
  block = strategy_inputs.config_block(variant["strategy"], c)
  with c.unlocked():
    for k, val in variant["block"].items():
      if k not in block:
        new = results.RENAMED.get(f"{name}.{k}")
        hint = f"; it was renamed {new.rsplit('.', 1)[-1]!r}" if new else ""
        raise ValueError(
          f"variant block override {k!r} is not a config.{name} entry ({sorted(block)}){hint}."
        )
      block[k] = val
  return c


def labeled_set(
  config, seed: int, num_train: int, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, int, str]:
  """(labeled indices (L,), round index r, tag) of the configured labeled set."""
  src = config.labeled.source
  if src == "uniform":
    n = int(config.labeled.num_labels)
    idx = pool_lib.initial_pool(
      pool_lib.round_key(pool_lib.streams(seed).pool, 0), labels, n, num_classes
    )
    return idx, 0, f"uniform{n}"
  path = pathlib.Path(src.format(seed=seed))
  rec = io.read_json(path)
  if rec.get("seed") != seed or rec.get("train_size") != num_train:
    raise ValueError(
      f"{path}: seed {rec.get('seed')} / train_size {rec.get('train_size')}; "
      f"expected seed {seed} and {num_train} training clips."
    )
  for r in rec["rounds"]:
    if r["num_labeled"] == config.labeled.num_labels:
      return (
        np.asarray(r["labeled_indices"], np.int32),
        int(r["round"]),
        f"{path.stem}_round{r['round']}",
      )
  raise ValueError(
    f"{path} has no round with {config.labeled.num_labels} labels "
    f"(config.labeled.num_labels); it has {[r['num_labeled'] for r in rec['rounds']]}."
  )


def output_path(workdir, dataset: str, seed: int, tag: str) -> pathlib.Path:
  return pathlib.Path(workdir) / f"pick_stats_{dataset}_seed{seed}_{tag}.json"
