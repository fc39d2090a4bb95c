"""The active-learning loop: rounds of (retrain from scratch, evaluate, select b points).

`run(config, workdir)` runs every (strategy, seed) of the config and writes one result JSON per
pair after every round (see `results.py`); `resume=True` continues partial files and skips
complete ones. Per-round keys are `fold_in(stream, round)` of strategy-independent streams,
so a resumed run makes the same selections as an uninterrupted one, and all strategies of a
seed share the initial pool and the round-0 model (trained once when run together).

Seeds run one after another, or (config.vmap_seeds) trained together by `ssl_train.train_many` in
lock-step rounds.

Strategies that need inputs of their own (the bilevel rule's Nystrom features and banks) build
them from their config block through `strategies.inputs`; the loop does not know their names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
import time
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from bilevel_jax import data as data_lib
from bilevel_jax.ssl import evaluate as ssl_evaluate
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax import strategies
from bilevel_jax.al import diagnostics as pick_diagnostics
from bilevel_jax.al import guards
from bilevel_jax.strategies import inputs as strategy_inputs
from bilevel_jax.al import model_cache
from bilevel_jax.al import outputs as outputs_lib
from bilevel_jax.al import pool as pool_lib
from bilevel_jax.al import results
from bilevel_jax.ssl import checkpoint as ssl_checkpoint
from bilevel_jax.ssl import state as ssl_state
from bilevel_jax.utils import budget as budget_lib
from bilevel_jax.utils import io
from bilevel_jax.utils import locks
from bilevel_jax.utils.metrics import MetricWriter
from bilevel_jax.utils.progress import Progress

log = logging.getLogger(__name__)

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


def run(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  resume: bool = False,
  command: str | None = None,
  on_error: str = "raise",
  deadline: budget_lib.Deadline | None = None,
) -> list[pathlib.Path]:
  """Runs the AL experiment of `config`; returns the result JSON paths.

  Raises ValueError / FileExistsError before any training for invalid configs, a missing
  dataset, or existing results without `resume`; `locks.WorkdirBusyError` at once if another
  process runs in `workdir` (the whole run holds the workdir's lock). Trainings checkpoint into
  `workdir/checkpoints/` every `config.train.checkpoint_every` steps; once `deadline` expires the
  training in progress checkpoints (or, between rounds, the finished round is written) and
  budget.TimeBudgetExceeded is raised: `resume=True` continues from there.
  """
  plan(config)  # a bad config fails before the workdir is created
  with locks.workdir_lock(workdir, command):
    return _run_locked(
      config, workdir, resume=resume, command=command, on_error=on_error, deadline=deadline
    )


def _run_locked(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  resume: bool = False,
  command: str | None = None,
  on_error: str = "raise",
  deadline: budget_lib.Deadline | None = None,
) -> list[pathlib.Path]:
  deadline = deadline or budget_lib.NO_DEADLINE
  workdir = pathlib.Path(workdir)
  the_plan = plan(config)
  command = command or " ".join([sys.executable] + sys.argv)
  paths = {
    (s, seed): results.result_path(workdir, config.dataset, s, seed)
    for s in the_plan.strategies
    for seed in the_plan.seeds
  }
  existing = [str(p) for p in paths.values() if p.exists()]
  if existing and not resume:
    raise FileExistsError(
      f"{len(existing)} result file(s) already exist in {workdir} (e.g. "
      f"{existing[0]}); pass --resume to continue them or use a new --workdir."
    )
  data = load_data(config, on_error)
  check_data(config, data)
  config_dict = config.to_dict()
  io.atomic_write_json(workdir / "config.json", {"command": command, "config": config_dict})

  prepared = {
    s: strategy_inputs.prepare(s, config, data, progress=config.progress)
    for s in the_plan.strategies
  }

  groups = [list(the_plan.seeds)] if config.vmap_seeds else [[s] for s in the_plan.seeds]
  for group in groups:
    shared_models: dict = {}  # round-0 models, identical for every strategy of a seed
    for name in the_plan.strategies:
      _run_group(
        config,
        name,
        group,
        the_plan,
        data,
        prepared[name],
        paths,
        resume,
        command,
        config_dict,
        workdir,
        shared_models,
        deadline,
      )
  return list(paths.values())


def _run_group(
  config,
  name,
  group,
  the_plan,
  data,
  prepared,
  paths,
  resume,
  command,
  config_dict,
  workdir,
  shared_models,
  deadline,
) -> None:
  """All rounds of one strategy for a group of seeds (trained together when vmapped)."""
  strategy = strategies.get(name)
  records, writers = {}, {}
  for seed in group:
    init = pool_lib.initial_pool(
      pool_lib.round_key(pool_lib.streams(seed).pool, 0),
      data.train_labels,
      config.al.initial,
      data.num_classes,
    )
    fresh = results.new_record(
      dataset=config.dataset,
      strategy=name,
      seed=seed,
      command=command,
      config=config_dict,
      train_size=len(data.train_labels),
      test_size=len(data.test_labels),
      num_classes=data.num_classes,
      schedule=list(the_plan.schedule),
      initial_indices=init,
    )
    path = paths[(name, seed)]
    records[seed] = results.load_for_resume(path, fresh) if (resume and path.exists()) else fresh
    records[seed]["device"] = str(jax.devices()[0].device_kind)
  active = [s for s in group if not records[s]["complete"]]
  if not active:
    return
  n_rounds = len(the_plan.schedule)
  bar = Progress(
    n_rounds * len(active),
    enabled=config.progress,
    logger=log,
    initial=sum(len(records[s]["rounds"]) for s in active),
    desc=f"{config.dataset} {name} seeds {active}",
  )
  for seed in active:
    writers[seed] = MetricWriter(
      workdir / "logs" / f"{config.dataset}_{name}_seed{seed}", tensorboard=config.tensorboard
    )
  try:
    while active:
      r = min(len(records[s]["rounds"]) for s in active)
      now = [s for s in active if len(records[s]["rounds"]) == r]
      labeled = {s: results.labeled_after(records[s]) for s in now}
      if deadline.expired():
        raise budget_lib.TimeBudgetExceeded(f"time budget spent before round {r} of {name}")
      models, train_seconds = _train(
        config, data, now, r, labeled, shared_models, workdir, deadline
      )
      for s in now:
        entry = _finish_round(
          config,
          name,
          strategy,
          prepared,
          s,
          r,
          labeled[s],
          models[s],
          train_seconds[s],
          data,
          workdir,
          bar,
        )
        rec = records[s]
        rec["rounds"].append(entry)
        rec["complete"] = entry["num_labeled"] >= the_plan.schedule[-1]
        results.save(paths[(name, s)], rec)
        writers[s].write_scalars(
          entry["num_labeled"],
          {
            "al/test_acc": entry["test_accuracy"],
            "al/train_seconds": entry["train_seconds"],
            "al/select_seconds": entry["select_seconds"],
          },
        )
        bar.update(1, labels=entry["num_labeled"], acc=f"{entry['test_accuracy']:.3f}")
        log.info(
          "%s %s seed %d: %d labels -> test accuracy %.4f",
          config.dataset,
          name,
          s,
          entry["num_labeled"],
          entry["test_accuracy"],
        )
      if r > 0 and workdir is not None:  # the round is written: its checkpoints can go
        ssl_checkpoint.remove(_checkpoint_dir(config, data, now, r, labeled, workdir))
      active = [s for s in active if not records[s]["complete"]]
  finally:
    bar.close()
    for w in writers.values():
      w.close()


def _train_subset(config) -> dict | None:
  """The training-subset entries that decide which clips are trained on; None for all clips."""
  if not config.subset.train:
    return None
  return {"train": int(config.subset.train), "seed": int(config.subset.seed)}


def _round0_path(config, data, seed, labeled, workdir):
  return model_cache.model_path(
    workdir,
    config.dataset,
    seed,
    config.train.to_dict(),
    labeled,
    pool_lib.round_key(pool_lib.streams(seed).train, 0),
    len(data.train_labels),
    data.num_classes,
    train_subset=_train_subset(config),
  )


def _checkpoint_dir(config, data, seeds, r, labeled, workdir) -> pathlib.Path:
  """workdir/checkpoints/train_<hash>: one folder per training, named by what it depends on."""
  return ssl_checkpoint.run_dir(
    pathlib.Path(workdir) / "checkpoints",
    train=ssl_state.comparable_train_config(config.train.to_dict()),
    round=r,
    seeds=list(seeds),
    labeled=[labeled[s] for s in seeds],
    num_train=len(data.train_labels),
    subset=_train_subset(config),
  )


def _train(
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
  todo = _reuse(config, data, seeds, r, labeled, shared_models, workdir, models)
  seconds = dict.fromkeys(seeds, 0.0)
  if not todo:
    return models, seconds
  with contextlib.ExitStack() as locks:
    if r == 0 and workdir is not None:
      for s in sorted(todo):  # one global order: two processes cannot deadlock
        path = _round0_path(config, data, s, labeled[s], workdir)
        locks.enter_context(
          io.exclusive_lock(path.with_name(path.name + ".lock"), f"the round-0 model {path}")
        )
      # Another process may have trained them while this one waited.
      todo = _reuse(config, data, todo, r, labeled, shared_models, workdir, models)
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
        else _checkpoint_dir(config, data, todo, r, labeled, workdir),
        desc=f"round {r} seeds {todo} training",
      )
      per_seed = (time.perf_counter() - t0) / len(todo)
      for s, clf in zip(todo, result.classifiers):
        models[s] = clf
        seconds[s] = per_seed
        if r == 0:
          shared_models[(s, r, labeled[s].tobytes())] = clf
          if workdir is not None:
            model_cache.save(_round0_path(config, data, s, labeled[s], workdir), clf)
      if r == 0 and workdir is not None:  # the models are on disk: the checkpoints can go
        ssl_checkpoint.remove(_checkpoint_dir(config, data, todo, r, labeled, workdir))
  return models, seconds


def _reuse(config, data, seeds, r, labeled, shared_models, workdir, models) -> list[int]:
  """Fills `models` with the round-0 models already in memory or on disk; returns the rest."""
  todo = []
  for s in seeds:
    key = (s, r, labeled[s].tobytes())
    if key not in shared_models and r == 0 and workdir is not None:
      cached = model_cache.load(
        _round0_path(config, data, s, labeled[s], workdir),
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


def _finish_round(
  config,
  name,
  strategy,
  prepared,
  seed,
  r,
  labeled,
  classifier,
  train_seconds,
  data,
  workdir,
  bar=None,
) -> dict[str, Any]:
  """Evaluates the round's model and, unless the budget is reached, selects the next batch."""
  say = bar.log if bar is not None else log.info
  say("round %d seed %d: evaluating on %d test clips", r, seed, len(data.test_labels))
  t0 = time.perf_counter()
  ev = ssl_evaluate.evaluate(
    classifier,
    data.test_waveforms,
    data.test_labels,
    data.num_classes,
    batch_size=config.predict_batch,
  )
  entry = {
    "round": r,
    "num_labeled": int(len(labeled)),
    "labeled_indices": [int(i) for i in labeled],
    "test_accuracy": float(ev.accuracy),
    "train_seconds": float(train_seconds),
    "device": str(jax.devices()[0].device_kind),  # runs may resume on other machines
    "eval_seconds": time.perf_counter() - t0,
    "select_seconds": 0.0,
    "picks": None,
    "pick_labels": None,
    "picks_misclassified": None,
  }
  if len(labeled) >= config.al.budget:
    return entry
  say(
    "round %d seed %d: selecting %d of %d clips (%s)",
    r,
    seed,
    config.al.batch_size_per_round,
    len(data.train_labels) - len(labeled),
    name,
  )
  t0 = time.perf_counter()
  st = pool_lib.streams(seed)
  outs = outputs_lib.model_outputs(
    classifier,
    data.train_waveforms,
    key=pool_lib.round_key(st.predict, r),
    num_augmentations=strategy.augmentations,
    batch_size=config.predict_batch,
  )
  extra = prepared.context(seed, labeled, st.bank) if prepared.context else {}
  ctx = outputs_lib.round_context(outs, data.train_labels, labeled, **extra)
  guards.check_context(r, name, ctx)  # strategies are jitted: their value checks cannot run
  picks, diagnostics = strategies.select_with_diagnostics(
    name, pool_lib.round_key(st.select, r), ctx, config.al.batch_size_per_round, **prepared.options
  )
  picks = np.asarray(picks)
  guards.check_selection(r, name, picks, diagnostics, labeled)
  entry["select_seconds"] = time.perf_counter() - t0
  pred = outs.probs.argmax(-1)
  entry["picks"] = [int(i) for i in picks]
  entry["pick_labels"] = [int(data.train_labels[i]) for i in picks]
  entry["picks_misclassified"] = int(np.sum(pred[picks] != data.train_labels[picks]))
  entry["pool_accuracy"] = float(np.mean(pred == data.train_labels))
  diagnostics, proxy_logits = pick_diagnostics.split_proxy(diagnostics)
  if diagnostics:  # e.g. bilevel: per greedy pick score, F, G and CG residual
    entry["selection"] = results.selection_entry(diagnostics)
  entry["pick_diagnostics"] = pick_diagnostics.round_entry(
    outs.probs,
    data.train_labels,
    labeled,
    picks,
    proxy_logits=proxy_logits,
    diagnostics=diagnostics,
  )
  if r == 0:
    io.atomic_savez(
      results.figure2_path(workdir, config.dataset, name, seed),
      compressed=True,
      embeddings=outs.embeddings.astype(np.float32),
      probs=outs.probs,
      labels=data.train_labels,
      labeled_idx=np.asarray(labeled),
      picks=picks,
      test_accuracy=ev.accuracy,
    )
  return entry
