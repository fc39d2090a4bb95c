"""End-to-end check of the faster CPU step: one cpu-scale MixMatch training (FSDD, 60 labels,
seed 0 of experiments.ssl_vs_supervised: same labeled set and key) through train_many's host
loop, test accuracy with EMA weights, and train_many's own s/step and CPU s/step.

  python -m benchmarks.cpu_training_check

Compare the accuracy with seed 0 of results/ssl_vs_supervised/fsdd_cpu_scale_h100.json (same
algorithm on an H100; float-level differences make single runs differ by a few points).
Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np

from bilevel_jax import data as D
from bilevel_jax.ssl import evaluate as eval_lib
from bilevel_jax.ssl import train as train_lib
from bilevel_jax.ssl.labels import labeled_sets
from experiments.configs import mixmatch as mm_config


def main():
  config = mm_config.get_config("cpu")
  ds = D.load_dataset("fsdd", progress=False)
  noise = D.load_background_noise()
  n = 60
  lab = labeled_sets(ds.train.labels, n, config.num_seeds, 10, config.seed)[:1]
  keys = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), n), config.num_seeds)
  tc = train_lib.TrainConfig.from_config(config.train, method="mixmatch")
  t0 = time.time()
  res = train_lib.train_many(
    tc,
    ds.train.waveforms,
    ds.train.labels,
    lab,
    keys[:1],
    num_classes=10,
    noise=noise,
    require_all_classes=True,
    progress=False,
  )
  ev = eval_lib.evaluate(
    res.classifiers[0], ds.test.waveforms, ds.test.labels, 10, config.eval_batch_size
  )
  print(
    json.dumps(
      {
        "command": "python " + " ".join(sys.argv),
        "jax": jax.__version__,
        "seed_mode": train_lib.resolve_seed_mode(tc.seed_mode),
        "steps": tc.steps,
        "labels": n,
        "test_accuracy": ev.accuracy,
        "wall_seconds": time.time() - t0,
        "train_seconds": res.seconds,
        "s_per_step": 1.0 / res.steps_per_second,
        "cpu_s_per_step": res.cpu_seconds_per_step,
        "final_train_metrics": res.history[-1],
        "labeled_indices": np.asarray(lab[0]).tolist(),
      },
      indent=1,
    )
  )


if __name__ == "__main__":
  main()
