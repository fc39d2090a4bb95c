"""Decisive experiments on one round: several selection variants on the same model and pool.

For a seed and a labeled set (the AL loop's class-covering initial draw at N labels, or the
labeled set of a round of a result JSON), `run_one` trains that round's MixMatch model with the
AL loop's training key (cached in `workdir/models/`, keyed by labeled set, key and train
config), computes its outputs once, then runs every variant (a registered strategy name,
`options` overriding its keyword options, `block` overriding entries of the strategy's own
config block, e.g. `config.bilevel` kernel settings; the strategy's inputs are built once per
distinct block) with the round's selection key and records
the picks and their `al.diagnostics.round_entry` statistics. Optionally (`config.retrain`) it
adds each batch, retrains with the next round's key and records the test accuracy.

The settings (seeds, variants, labeled set) are checked in `al.pick_stats_spec`. One JSON per
(seed, labeled set), rewritten after every variant; a rerun skips the variants
already there with the same spec (resumable) and refuses a file written with another setting.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import platform
import time
from typing import Any

import jax
import numpy as np

from bilevel_jax import strategies
from bilevel_jax.al import diagnostics as pick_diagnostics
from bilevel_jax.al import experiment
from bilevel_jax.al import model_cache
from bilevel_jax.al import outputs as outputs_lib
from bilevel_jax.al import pick_stats_spec
from bilevel_jax.al import pool as pool_lib
from bilevel_jax.al import results
from bilevel_jax.al import round_models
from bilevel_jax.strategies import inputs as strategy_inputs
from bilevel_jax.ssl import evaluate as ssl_evaluate
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.utils import io

# Re-exported: callers use pick_stats.parse_seeds / labeled_set.
from bilevel_jax.al.pick_stats_spec import labeled_set  # noqa: F401
from bilevel_jax.al.pick_stats_spec import parse_seeds  # noqa: F401

log = logging.getLogger(__name__)

FORMAT = "bilevel_jax.pick_stats/1"


def _model(config, data, seed, r, labeled, workdir, progress) -> tuple[Any, float]:
  """The round-r model on `labeled` (AL loop training key), from the cache or trained now."""
  key = pool_lib.round_key(pool_lib.streams(seed).train, r)
  path = model_cache.model_path(
    workdir,
    config.dataset,
    seed,
    config.train.to_dict(),
    labeled,
    key,
    len(data.train_labels),
    data.num_classes,
    train_subset=round_models.train_subset(config),
  )
  path = path.with_name(path.name.replace("_round0_", f"_round{r}_"))
  clf = model_cache.load(path, config.train, data.num_classes, data.noise)
  if clf is not None:
    log.info("seed %d round %d: model loaded from %s", seed, r, path)
    return clf, 0.0
  t0 = time.perf_counter()
  res = ssl_train.train(
    config.train,
    data.train_waveforms,
    data.train_labels,
    labeled,
    key,
    num_classes=data.num_classes,
    noise=data.noise,
    progress=progress,
  )
  model_cache.save(path, res.classifiers[0])
  return res.classifiers[0], time.perf_counter() - t0


def machine() -> dict[str, Any]:
  """CPU model, core count and load (the machine is shared: timings are indicative)."""
  model = platform.processor()
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return {
    "cpu": model,
    "cores": os.cpu_count(),
    "load_average": list(os.getloadavg()),
    "device": str(jax.devices()[0].device_kind),
  }


def _jsonable_options(options: dict) -> dict:
  return {k: v for k, v in options.items() if isinstance(v, (int, float, str, bool, type(None)))}


def run_one(
  config,
  seed: int,
  variants: dict[str, dict],
  data: experiment.Data,
  workdir,
  *,
  command: str = "",
  prepared: dict | None = None,
  bar=None,
) -> pathlib.Path:
  """All variants for one seed; returns the JSON path (see the module docstring)."""
  labeled, r, tag = pick_stats_spec.labeled_set(
    config, seed, len(data.train_labels), data.train_labels, data.num_classes
  )
  path = pick_stats_spec.output_path(workdir, config.dataset, seed, tag)
  setting = {
    "dataset": config.dataset,
    "subset": config.subset.to_dict(),
    "train": config.train.to_dict(),
    "batch": int(config.al.batch_size_per_round),
    "labeled_indices": labeled.tolist(),
    "round": r,
  }
  record = {
    "format": FORMAT,
    "seed": seed,
    "labeled_tag": tag,
    "setting": setting,
    "command": command,
    "variants": {},
  }
  if path.exists():
    old = io.read_json(path)
    if old.get("setting") != setting:
      raise ValueError(
        f"{path} was written with another setting (labeled set, training, batch "
        "or data); use a new workdir or delete it."
      )
    record["variants"] = old["variants"]
    if "model" in old:
      record["model"] = old["model"]
  todo = {
    n: v
    for n, v in variants.items()
    if not (
      n in record["variants"]
      and record["variants"][n]["spec"] == v
      and (not config.retrain or "retrained_test_accuracy" in record["variants"][n])
    )
  }
  if bar is not None:
    bar.update(len(variants) - len(todo))
  if not todo:
    return path
  progress = bool(config.progress)
  prepared = {} if prepared is None else prepared
  clf, train_seconds = _model(config, data, seed, r, labeled, workdir, progress)
  ev = ssl_evaluate.evaluate(
    clf, data.test_waveforms, data.test_labels, data.num_classes, batch_size=config.predict_chunk
  )
  st = pool_lib.streams(seed)
  # K augmented predictions drawn with one key differ with K, so each K gets its own call,
  # as in the AL loop (one strategy per call).
  outs_by_k = {}

  def outputs(k):
    if k not in outs_by_k:
      outs_by_k[k] = outputs_lib.model_outputs(
        clf,
        data.train_waveforms,
        key=pool_lib.round_key(st.predict, r),
        num_augmentations=k,
        batch_size=config.predict_chunk,
      )
    return outs_by_k[k]

  pred = outputs(0).probs.argmax(-1)
  record["model"] = {
    "test_accuracy": float(ev.accuracy),
    "pool_accuracy": float(np.mean(pred == data.train_labels)),
    "train_seconds": float(train_seconds or record.get("model", {}).get("train_seconds", 0.0)),
  }
  for name, v in todo.items():
    strategy = strategies.get(v["strategy"])
    outs = outputs(strategy.augmentations)
    cfg = pick_stats_spec.variant_config(config, v)
    block = strategy_inputs.config_block(v["strategy"], cfg)
    pkey = (v["strategy"], json.dumps(None if block is None else block.to_dict(), sort_keys=True))
    if pkey not in prepared:
      prepared[pkey] = strategy_inputs.prepare(v["strategy"], cfg, data, progress=progress)
    inputs = prepared[pkey]
    extra = inputs.context(seed, labeled, st.bank) if inputs.context else {}
    options = dict(inputs.options)
    options.update(v["options"])
    ctx = outputs_lib.round_context(outs, data.train_labels, labeled, **extra)
    t0 = time.perf_counter()
    picks, diag = strategies.select_with_diagnostics(
      v["strategy"],
      pool_lib.round_key(st.select, r),
      ctx,
      int(config.al.batch_size_per_round),
      **options,
    )
    picks = np.asarray(picks)
    seconds = time.perf_counter() - t0
    diag, proxy = pick_diagnostics.split_proxy(diag)
    entry = {
      "spec": v,
      "options_used": _jsonable_options(options),
      "picks": picks.tolist(),
      "pick_labels": data.train_labels[picks].tolist(),
      "select_seconds": seconds,
      "pick_diagnostics": pick_diagnostics.round_entry(
        outs.probs, data.train_labels, labeled, picks, proxy_logits=proxy, diagnostics=diag
      ),
    }
    if diag:
      entry["selection"] = results.selection_entry(diag)
    if config.retrain:
      entry.update(_retrained(config, data, seed, r, labeled, picks, workdir, progress))
    record["variants"][name] = entry
    record["machine"] = machine()
    io.atomic_write_json(path, record)
    d = entry["pick_diagnostics"]
    log.info(
      "seed %d %s: %d/%d picks misclassified (pool error rate %.3f)%s",
      seed,
      name,
      d["picks_misclassified"],
      d["num_picks"],
      d["pool_error_rate"] or 0.0,
      f", proxy pool accuracy {d['proxy_pool_accuracy']:.3f}" if "proxy_pool_accuracy" in d else "",
    )
    if bar is not None:
      bar.update(1)
  return path


def _retrained(config, data, seed, r, labeled, picks, workdir, progress) -> dict[str, Any]:
  """Test accuracy of the next round's model (labeled + picks, the loop's round r+1 key)."""
  clf, seconds = _model(
    config, data, seed, r + 1, np.concatenate([labeled, picks]).astype(np.int32), workdir, progress
  )
  ev = ssl_evaluate.evaluate(
    clf, data.test_waveforms, data.test_labels, data.num_classes, batch_size=config.predict_chunk
  )
  return {"retrained_test_accuracy": float(ev.accuracy), "retrain_seconds": float(seconds)}


def run(
  config, workdir, *, command: str = "", variants: str | dict | None = None
) -> list[pathlib.Path]:
  """Every configured seed (variants: overrides config.variants); returns the JSON paths."""
  seeds, variants = pick_stats_spec.check_config(config, variants)
  data = experiment.load_data(config)
  experiment.check_data(config, data)
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  prepared: dict = {}  # strategy inputs (e.g. kernel features) shared across seeds
  paths = []
  with tqdm(
    total=len(seeds) * len(variants),
    disable=not config.progress,
    desc="pick stats (seed x variant)",
  ) as bar:
    for seed in seeds:
      paths.append(
        run_one(config, seed, variants, data, workdir, command=command, prepared=prepared, bar=bar)
      )
  return paths
