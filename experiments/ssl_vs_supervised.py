"""Figure 1: test accuracy against number of labels for MixMatch, supervised+aug, supervised.

  python -m experiments.ssl_vs_supervised --config=experiments/configs/mixmatch.py:cpu \
      --workdir=runs/ssl_vs_supervised_cpu

For every (label count, method) the seeds are trained together (`config.seeds_together`; in
sequence at paper scale) on the same labeled sets across methods; `<workdir>/results.json` is
rewritten atomically after every pair, and a re-run skips finished pairs (and resumes a killed
pair from its Orbax checkpoint, saved every `train.checkpoint_every` steps).
`<workdir>/figure1.png` is drawn from the JSON by `plot_figure1`. `--time_budget=SECONDS`: after
that wall time the training in progress checkpoints and the program exits with status 75
(EX_TEMPFAIL); the same command continues it.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from bilevel_jax.ssl.labels import labeled_sets
from bilevel_jax.ssl.state import comparable_train_config
from bilevel_jax.utils import budget, io

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)
_TIME_BUDGET = flags.DEFINE_float(
  "time_budget",
  None,
  "Wall seconds; then checkpoint and exit with status "
  f"{budget.EXIT_TIME_BUDGET} (rerun the same command to continue).",
)

METHOD_LABELS = {
  "mixmatch": "MixMatch",
  "supervised_aug": "supervised + augmentation",
  "supervised": "supervised",
}


def plot_figure1(results: dict, path: str | pathlib.Path, title: str | None = None) -> None:
  """Accuracy (%) vs number of labels, mean +- std over seeds, one line per method."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(5, 3.6))
  for method, per_count in results["runs"].items():
    counts = sorted(int(n) for n in per_count)
    if not counts:
      continue
    acc = [100 * np.asarray(per_count[str(n)]["accuracy"]) for n in counts]
    mean = np.array([a.mean() for a in acc])
    std = np.array([a.std() for a in acc])
    (line,) = ax.plot(counts, mean, marker="o", label=METHOD_LABELS.get(method, method))
    ax.fill_between(counts, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  ax.set_xlabel("number of labels")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title or f"{results.get('dataset', '')} ({results.get('scale', '')} scale)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  io.atomic_savefig(fig, path, dpi=130)
  plt.close(fig)


def _check_config(config: Any, num_train: int, num_classes: int) -> None:
  unknown = set(config.methods) - set(METHOD_LABELS)
  if unknown:
    raise ValueError(
      f"config.methods has unknown entries {sorted(unknown)}; expected a subset "
      f"of {sorted(METHOD_LABELS)}."
    )
  for n in config.label_counts:
    if not num_classes <= n <= num_train:
      raise ValueError(
        f"config.label_counts entry {n} must be in [{num_classes}, {num_train}] "
        "(every class needs a label)."
      )
  if config.num_seeds < 1:
    raise ValueError(f"config.num_seeds={config.num_seeds}; expected >= 1.")


def run(config: Any, workdir: str | pathlib.Path, deadline: budget.Deadline | None = None) -> dict:
  """Trains every (label count, method) not yet in `<workdir>/results.json`; returns results.

  Raises budget.TimeBudgetExceeded once `deadline` expires (the training in progress saved).
  """
  from bilevel_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ssl import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ssl import train as train_lib  # pylint: disable=g-import-not-at-top

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  io.atomic_write_json(workdir / "config.json", json.loads(config.to_json()))
  root = config.data_root or None
  ds = data_lib.load_dataset(config.dataset, root, progress=config.progress)
  noise = data_lib.load_background_noise(root)
  num_classes = len(ds.class_names)
  _check_config(config, len(ds.train.labels), num_classes)
  # Reject bad training settings before any data reaches the device.
  for method in config.methods:
    tc = train_lib.TrainConfig.from_config(config.train, method=method)
    train_lib.validate(
      tc, len(ds.train.labels), ds.train.labels, np.arange(num_classes)[None], num_classes, False
    )

  results_path = workdir / "results.json"
  command = " ".join(["python -m experiments.ssl_vs_supervised"] + sys.argv[1:])
  if results_path.exists():
    results = io.read_json(results_path)
    if comparable_train_config(results.get("train", {})) != comparable_train_config(
      json.loads(config.train.to_json())
    ):
      raise ValueError(
        f"{results_path} was written with different training settings; use a new --workdir."
      )
  else:
    results = {
      "dataset": config.dataset,
      "scale": config.scale,
      "command": command,
      "train": json.loads(config.train.to_json()),
      "num_seeds": config.num_seeds,
      "device": str(jax.devices()[0].device_kind),
      "runs": {},
    }
  results["commands"] = sorted(set(results.get("commands", [])) | {command})

  base_key = jax.random.key(config.seed)
  for n in config.label_counts:
    lab = labeled_sets(ds.train.labels, n, config.num_seeds, num_classes, config.seed)
    for method in config.methods:
      done = results["runs"].get(method, {})
      if str(n) in done:
        print(f"skipping {method} at {n} labels (done)", flush=True)
        continue
      tc = train_lib.TrainConfig.from_config(config.train, method=method)
      # Same init/data-order keys for every method, so methods differ only in the loss.
      keys = jax.random.split(jax.random.fold_in(base_key, n), config.num_seeds)
      t0 = time.time()
      res = train_lib.train_many(
        tc,
        ds.train.waveforms,
        ds.train.labels,
        lab,
        keys,
        num_classes=num_classes,
        noise=noise,
        workdir=workdir / "train" / f"{method}_{n}",
        require_all_classes=True,
        progress=config.progress,
        vmapped=config.seeds_together,
        deadline=deadline,
      )
      evals = [
        eval_lib.evaluate(c, ds.test.waveforms, ds.test.labels, num_classes, config.eval_batch_size)
        for c in res.classifiers
      ]
      accs = [e.accuracy for e in evals]
      print(
        f"{method} at {n} labels: {100 * np.mean(accs):.2f} +- {100 * np.std(accs):.2f} % "
        f"({time.time() - t0:.0f} s)",
        flush=True,
      )
      results["runs"].setdefault(method, {})[str(n)] = {
        "accuracy": accs,
        "mean_accuracy": float(np.mean(accs)),
        "std_accuracy": float(np.std(accs)),
        "per_class_accuracy": [e.per_class_accuracy for e in evals],
        "labeled_indices": lab,
        "train_seconds": res.seconds,
        "wall_seconds": time.time() - t0,
        "steps_per_second_per_model": res.steps_per_second,
        "final_train_metrics": res.history[-1] if res.history else {},
        "device": str(jax.devices()[0].device_kind),
      }
      io.atomic_write_json(results_path, results)
      plot_figure1(results, workdir / "figure1.png")
  return results


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. experiments/configs/mixmatch.py:cpu")
  try:
    run(_CONFIG.value, _WORKDIR.value, budget.Deadline(_TIME_BUDGET.value))
  except budget.TimeBudgetExceeded as e:
    print(f"Stopped: {e}. Rerun the same command to continue.", flush=True)
    sys.exit(budget.EXIT_TIME_BUDGET)


if __name__ == "__main__":
  app.run(main)
