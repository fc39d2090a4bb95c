"""Training-step variants side by side: today's step against bf16 compute and scanned chunks.

  python -m benchmarks.train_step --config=experiments/configs/mixmatch.py:cpu \
      --config.train.batch_size=16 --steps=12 --chunk=4 --repeats=2 \
      --out=benchmarks/results/train_step_cpu.json
  python -m benchmarks.train_step --config=experiments/configs/mixmatch.py:paper \
      --steps=400 --chunk=100 --repeats=3 --out=benchmarks/results/train_step_gpu.json

Every variant trains one model (MixMatch on FSDD, `--labels` labels) for `--steps` steps with
train_many, in the same process, the variants interleaved `--repeats` times; the first call
(compilation) is excluded from the rates, medians are reported. Variants (`--variants`):
  today       the config as it is (seed_mode auto: vmap chunk on accelerators, host on CPU)
  bf16        precision=bfloat16 (bf16 convolutions, float32 state)
  host        seed_mode=host: one jitted step per call from Python
  host_scan   seed_mode=host with steps_per_call=--chunk (lax.scan)
  bf16_scan   both
The JSON records the device, CPU model, core count and load average before and after.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
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
_STEPS = flags.DEFINE_integer("steps", 12, "Training steps per run (first call = warm-up).")
_CHUNK = flags.DEFINE_integer("chunk", 4, "Steps per logged chunk and per scanned call.")
_LABELS = flags.DEFINE_integer("labels", 60, "Labeled points.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Rounds over the variants (interleaved).")
_VARIANTS = flags.DEFINE_list(
  "variants",
  ["today", "bf16", "host", "host_scan", "bf16_scan"],
  "Variants to time (see the module docstring).",
)
_OUT = flags.DEFINE_string("out", None, "Output JSON path.", required=True)


def variants(chunk: int) -> dict[str, dict]:
  return {
    "today": {},
    "bf16": {"precision": "bfloat16"},
    "host": {"seed_mode": "host", "steps_per_call": 1},
    "host_scan": {"seed_mode": "host", "steps_per_call": chunk},
    "bf16_scan": {"seed_mode": "host", "steps_per_call": chunk, "precision": "bfloat16"},
  }


def cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return platform.processor()
  return next(
    (l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")),
    platform.processor(),
  )


def main(argv):
  del argv
  from bilevel_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ssl import train as train_lib  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ssl.labels import labeled_sets  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  table = variants(_CHUNK.value)
  unknown = [v for v in _VARIANTS.value if v not in table]
  if unknown:
    raise app.UsageError(f"--variants entries {unknown}; expected some of {sorted(table)}.")
  if _STEPS.value < 2 * _CHUNK.value or _STEPS.value % _CHUNK.value:
    raise app.UsageError(
      f"--steps={_STEPS.value} must be a multiple of --chunk={_CHUNK.value} "
      "and at least two chunks (the first compiles and is not timed)."
    )
  load_before = os.getloadavg()
  tc = train_lib.TrainConfig.from_config(
    config.train,
    method="mixmatch",
    steps=_STEPS.value,
    log_every=_CHUNK.value,
    checkpoint_every=_STEPS.value,
  )
  root = config.data_root or None
  ds = data_lib.load_dataset(config.dataset, root, progress=False)
  noise = data_lib.load_background_noise(root)
  num_classes = len(ds.class_names)
  lab = labeled_sets(ds.train.labels, _LABELS.value, 1, num_classes, config.seed)
  keys = jax.random.split(jax.random.key(config.seed), 1)
  runs = {name: [] for name in _VARIANTS.value}
  for _ in range(_REPEATS.value):
    for name in _VARIANTS.value:
      t0 = time.perf_counter()
      res = train_lib.train_many(
        dataclasses.replace(tc, **table[name]),
        ds.train.waveforms,
        ds.train.labels,
        lab,
        keys,
        num_classes=num_classes,
        noise=noise,
        progress=False,
      )
      runs[name].append(
        {
          "ms_per_step": 1e3 / res.steps_per_second,
          "process_cpu_ms_per_step": 1e3 * res.cpu_seconds_per_step,
          "wall_seconds_including_compile": time.perf_counter() - t0,
          "final_loss": res.history[-1]["train/loss"],
        }
      )
      print(name, runs[name][-1], flush=True)
  results = {
    name: {
      "ms_per_step_median": float(np.median([r["ms_per_step"] for r in rs])),
      "settings": table[name],
      "runs": rs,
    }
    for name, rs in runs.items()
  }
  base = results.get("today", {}).get("ms_per_step_median")
  out = {
    "command": " ".join(["python -m benchmarks.train_step"] + sys.argv[1:]),
    "device": str(jax.devices()[0].device_kind),
    "backend": jax.default_backend(),
    "jax": jax.__version__,
    "cpu_model": cpu_model(),
    "cpu_count": os.cpu_count(),
    "load_average_before": load_before,
    "load_average_after": os.getloadavg(),
    "scale": config.scale,
    "model": f"{tc.model} depth {tc.depth} width {tc.width}",
    "batch_size": tc.batch_size,
    "num_augmentations": tc.num_augmentations,
    "steps": _STEPS.value,
    "timed_steps": _STEPS.value - _CHUNK.value,
    "chunk": _CHUNK.value,
    "repeats": _REPEATS.value,
    "labels": _LABELS.value,
    "variants": results,
    "speedup_over_today": {k: base / v["ms_per_step_median"] for k, v in results.items()}
    if base
    else {},
  }
  io.atomic_write_json(_OUT.value, out)
  print({k: v["ms_per_step_median"] for k, v in results.items()}, flush=True)


if __name__ == "__main__":
  app.run(main)
