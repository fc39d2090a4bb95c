"""S seeds trained as one vmapped program vs S sequential runs (steps per second).

Arms: `vmapped` (vmap over seeds, steps in a lax loop: one program), `vmapped_host` (a jitted
vmapped step driven by a Python loop over steps), `map` (lax.map over
seeds in one program), `host` (one jitted single-model step driven by Python loops over seeds
and steps, one seed at a time), `host_threads` (the same with the seeds spread over
`train.seed_threads` threads, 0 = min(S, cores): train_many's CPU default) and `sequential`
(S separate train_many calls, each with the backend's default mode).

  python -m benchmarks.vmap_seeds --seeds=6 --steps=60 --arms=host,host_threads,sequential \
      --repeats=2 --out=benchmarks/results/vmap_seeds_cpu_threads.json

  python -m benchmarks.vmap_seeds --config=experiments/configs/mixmatch.py:cpu --steps=60 \
      --out=benchmarks/results/vmap_seeds_cpu.json

Both arms train MixMatch (or `--method`) on FSDD with 60 labels per seed, identical settings,
one after the other in the same process; the first logged chunk (compilation) is excluded
from the rates. Throughput counts model-steps: S * steps / time for the vmapped arm.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bilevel_jax.utils import io

_CONFIG = config_flags.DEFINE_config_file(
  "config", "experiments/configs/mixmatch.py:cpu", "Config file.", lock_config=False
)
_SEEDS = flags.DEFINE_integer("seeds", 6, "Number of seeds S.")
_STEPS = flags.DEFINE_integer("steps", 60, "Training steps per run (first chunk = warm-up).")
_CHUNK = flags.DEFINE_integer("chunk", 10, "Steps per jitted call (the first is not timed).")
_LABELS = flags.DEFINE_integer("labels", 60, "Labeled points per seed.")
_METHOD = flags.DEFINE_string("method", "mixmatch", "Training method.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Rounds over the arms (interleaved); medians.")
_OUT = flags.DEFINE_string("out", None, "Output JSON path.", required=True)
_ARMS = flags.DEFINE_list(
  "arms",
  ["vmapped", "sequential"],
  "vmapped (vmap in one program), map (lax.map in one program), "
  "vmapped_host (host loop over a jitted vmapped step), host (Python loop over "
  "a jitted step, one seed at a time), host_threads (the same, seeds "
  "in threads), sequential (S separate runs).",
)

_MODES = {
  "vmapped": "vmap",
  "vmapped_host": "vmap_host",
  "map": "map",
  "host": "host",
  "host_threads": "host",
  "sequential": "auto",
}


def main(argv):
  del argv
  from bilevel_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ssl import train as train_lib  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ssl.labels import labeled_sets  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if _STEPS.value < 2 * _CHUNK.value:
    raise app.UsageError(
      f"--steps={_STEPS.value} must be >= 2 * --chunk={_CHUNK.value} so "
      "that something is timed after the compiling chunk."
    )
  tc = train_lib.TrainConfig.from_config(
    config.train,
    method=_METHOD.value,
    steps=_STEPS.value,
    log_every=_CHUNK.value,
    checkpoint_every=_STEPS.value,
  )
  root = config.data_root or None
  ds = data_lib.load_dataset(config.dataset, root, progress=False)
  noise = data_lib.load_background_noise(root)
  num_classes = len(ds.class_names)
  lab = labeled_sets(ds.train.labels, _LABELS.value, _SEEDS.value, num_classes, config.seed)
  keys = jax.random.split(jax.random.key(config.seed), _SEEDS.value)
  for name in _ARMS.value:
    if name not in _MODES:
      raise app.UsageError(f"--arms entry {name!r}; expected one of {sorted(_MODES)}.")
  runs = {name: [] for name in _ARMS.value}
  for _ in range(_REPEATS.value):
    for name in _ARMS.value:
      runs[name].append(_run_arm(name, tc, ds, noise, lab, keys, num_classes, train_lib))
      print(name, runs[name][-1], flush=True)
  arms = {
    name: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} | {"runs": rs}
    for name, rs in runs.items()
  }
  out = {
    "command": " ".join(["python -m benchmarks.vmap_seeds"] + sys.argv[1:]),
    "device": str(jax.devices()[0].device_kind),
    "platform": jax.default_backend(),
    "host": platform.node(),
    "cpu_count": os.cpu_count(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "load_average_at_end": os.getloadavg(),
    "repeats": _REPEATS.value,
    "seeds": _SEEDS.value,
    "steps": _STEPS.value,
    "timed_steps": _STEPS.value - _CHUNK.value,
    "method": _METHOD.value,
    "labels": _LABELS.value,
    "scale": config.scale,
    "model": f"WRN-{tc.depth}-{tc.width}",
    "batch_size": tc.batch_size,
    "arms": arms,
    "speedup_over_host": {
      k: v["model_steps_per_second"] / arms["host"]["model_steps_per_second"]
      for k, v in arms.items()
      if "host" in arms
    },
    "speedup_over_sequential": {
      k: v["model_steps_per_second"] / arms["sequential"]["model_steps_per_second"]
      for k, v in arms.items()
      if "sequential" in arms
    },
  }
  io.atomic_write_json(_OUT.value, out)
  print(out, flush=True)


def _run_arm(name, tc, ds, noise, lab, keys, num_classes, train_lib) -> dict:
  one_program = name != "sequential"
  threads = {"host": 1, "host_threads": tc.seed_threads}.get(name, tc.seed_threads)
  t0 = time.perf_counter()
  res = train_lib.train_many(
    dataclasses.replace(tc, seed_mode=_MODES[name], seed_threads=threads),
    ds.train.waveforms,
    ds.train.labels,
    lab,
    keys,
    num_classes=num_classes,
    noise=noise,
    vmapped=one_program,
    progress=False,
  )
  wall = time.perf_counter() - t0
  # One train_many call: sps counts steps of all S models at once; sequential: mean of S runs.
  model_steps_per_s = res.steps_per_second * (lab.shape[0] if one_program else 1)
  return {
    "steps_per_second": res.steps_per_second,
    "seconds_per_step": 1.0 / res.steps_per_second,
    "process_cpu_seconds_per_step": res.cpu_seconds_per_step,
    "model_steps_per_second": model_steps_per_s,
    "seconds_per_model_step": 1.0 / model_steps_per_s,
    "wall_seconds_including_compile": wall,
    "final_loss": res.history[-1]["train/loss"],
  }


if __name__ == "__main__":
  app.run(main)
