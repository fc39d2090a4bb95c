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

This module drives the rounds, resumes and writes the records; the plan and data are in
`al.experiment`, a round's models in `al.round_models`, a round's evaluation and selection in
`al.round_step`.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys

import jax
import ml_collections

from bilevel_jax import strategies
from bilevel_jax.al import pool as pool_lib
from bilevel_jax.al import results
from bilevel_jax.al import round_models
from bilevel_jax.al import round_step
from bilevel_jax.ssl import checkpoint as ssl_checkpoint
from bilevel_jax.strategies import inputs as strategy_inputs
from bilevel_jax.utils import budget as budget_lib
from bilevel_jax.utils import io
from bilevel_jax.utils import locks
from bilevel_jax.utils.metrics import MetricWriter
from bilevel_jax.utils.progress import Progress

# The loop's names from before the split (callers use loop.<name>; tests replace loop.load_data
# and loop._train, which the loop below looks up here).
from bilevel_jax.al.experiment import PAPER_STRATEGIES  # noqa: F401
from bilevel_jax.al.experiment import Data  # noqa: F401
from bilevel_jax.al.experiment import Plan  # noqa: F401
from bilevel_jax.al.experiment import check_data
from bilevel_jax.al.experiment import load_data
from bilevel_jax.al.experiment import parse_strategies  # noqa: F401
from bilevel_jax.al.experiment import plan

_train = round_models.train_round
_round0_path = round_models.round0_path
_train_subset = round_models.train_subset

log = logging.getLogger(__name__)


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
        entry = round_step.finish_round(
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
        ssl_checkpoint.remove(round_models.checkpoint_dir(config, data, now, r, labeled, workdir))
      active = [s for s in active if not records[s]["complete"]]
  finally:
    bar.close()
    for w in writers.values():
      w.close()
