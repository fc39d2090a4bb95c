"""The models of an AL round: trained (all seeds of a group together) or reused.

Round-0 models depend only on the seed and its initial labels, so every strategy of a seed
shares them: in memory within a process and on disk across processes (`al.model_cache`).
Trainings checkpoint into `workdir/checkpoints/<one folder per training>`.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import time

import jax
import numpy as np

from bilevel_jax.al import model_cache
from bilevel_jax.al import pool as pool_lib
from bilevel_jax.ssl import checkpoint as ssl_checkpoint
from bilevel_jax.ssl import state as ssl_state
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.utils import budget as budget_lib
from bilevel_jax.utils import io

log = logging.getLogger(__name__)


def train_subset(config) -> dict | None:
  """The training-subset entries that decide which clips are trained on; None for all clips."""
  if not config.subset.train:
    return None
  return {"train": int(config.subset.train), "seed": int(config.subset.seed)}


def round0_path(config, data, seed, labeled, workdir):
  return model_cache.model_path(
    workdir,
    config.dataset,
    seed,
    config.train.to_dict(),
    labeled,
    pool_lib.round_key(pool_lib.streams(seed).train, 0),
    len(data.train_labels),
    data.num_classes,
    train_subset=train_subset(config),
  )


def checkpoint_dir(config, data, seeds, r, labeled, workdir) -> pathlib.Path:
  """workdir/checkpoints/train_<hash>: one folder per training, named by what it depends on."""
  return ssl_checkpoint.run_dir(
    pathlib.Path(workdir) / "checkpoints",
    train=ssl_state.comparable_train_config(config.train.to_dict()),
    round=r,
    seeds=list(seeds),
    labeled=[labeled[s] for s in seeds],
    num_train=len(data.train_labels),
    subset=train_subset(config),
  )


def train_round(
  config, data, seeds, r, labeled, shared_models, workdir=None, deadline=budget_lib.NO_DEADLINE
):
  """Trains (or reuses) the round-r models of `seeds`.

  Round-0 models are shared by all strategies of a seed: in memory within a process and, with
  a workdir, on disk across processes (`al.model_cache`). A process about to train round-0
  models holds a lock per model file, so two processes (e.g. `scripts/al_cpu_two_lanes.sh`)
  never train the same one: the second waits, then loads it.

  Returns:
    ({seed: Classifier}, {seed: training seconds}): wall seconds of the (joint) training divided
    by the seeds trained together; 0 for a reused model.
  """
  models = {}
  todo = reuse(config, data, seeds, r, labeled, shared_models, workdir, models)
  seconds = dict.fromkeys(seeds, 0.0)
  if not todo:
    return models, seconds
  with contextlib.ExitStack() as locks:
    if r == 0 and workdir is not None:
      for s in sorted(todo):  # one global order: two processes cannot deadlock
        path = round0_path(config, data, s, labeled[s], workdir)
        locks.enter_context(
          io.exclusive_lock(path.with_name(path.name + ".lock"), f"the round-0 model {path}")
        )
      # Another process may have trained them while this one waited.
      todo = reuse(config, data, todo, r, labeled, shared_models, workdir, models)
    if todo:
      keys = jax.numpy.stack([pool_lib.round_key(pool_lib.streams(s).train, r) for s in todo])
      t0 = time.perf_counter()
      result = ssl_train.train_many(
        config.train,
        data.train_waveforms,
        data.train_labels,
        np.stack([labeled[s] for s in todo]),
        keys,
        num_classes=data.num_classes,
        noise=data.noise,
        progress=config.progress,
        deadline=deadline,
        workdir=None
        if workdir is None
        else checkpoint_dir(config, data, todo, r, labeled, workdir),
        desc=f"round {r} seeds {todo} training",
      )
      per_seed = (time.perf_counter() - t0) / len(todo)
      for s, clf in zip(todo, result.classifiers):
        models[s] = clf
        seconds[s] = per_seed
        if r == 0:
          shared_models[(s, r, labeled[s].tobytes())] = clf
          if workdir is not None:
            model_cache.save(round0_path(config, data, s, labeled[s], workdir), clf)
      if r == 0 and workdir is not None:  # the models are on disk: the checkpoints can go
        ssl_checkpoint.remove(checkpoint_dir(config, data, todo, r, labeled, workdir))
  return models, seconds


def reuse(config, data, seeds, r, labeled, shared_models, workdir, models) -> list[int]:
  """Fills `models` with the round-0 models already in memory or on disk; returns the rest."""
  todo = []
  for s in seeds:
    key = (s, r, labeled[s].tobytes())
    if key not in shared_models and r == 0 and workdir is not None:
      cached = model_cache.load(
        round0_path(config, data, s, labeled[s], workdir),
        config.train,
        data.num_classes,
        data.noise,
      )
      if cached is not None:
        log.info("  round 0, seed %d: model loaded from %s", s, workdir)
        shared_models[key] = cached
    if key in shared_models:
      models[s] = shared_models[key]
    else:
      todo.append(s)
  return todo
