"""Side-by-side CPU cost of the quick config's small_cnn MixMatch step (batch 64 + 2 x 64) with
plain autodiff kernel gradients (weight_grad_chunk=0) vs gradients summed over batch slices.

  python -m benchmarks.small_cnn_grad_chunk --chunks=0,8,16,32 --rounds=25 \
      --reps=5 --out=benchmarks/results/small_cnn_grad_chunk.json

All variants are jitted in one process and interleaved in rounds (each round times every
variant `reps` calls in a row, with block_until_ready), so the background jobs sharing the 2
cores hit all variants alike; also times the model's forward+backward alone ("fwd_bwd"),
the only part the chunk changes. Reports medians over rounds of wall and process-CPU seconds per
step, and the median (and quartiles) over rounds of each variant's per-round ratio to chunk 0
(paired, so slow drifts of the background load cancel). Writes one JSON object with the command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax import audio
from bilevel_jax import data as D
from bilevel_jax.ssl import train as T
from bilevel_jax.utils import io
from experiments.configs import fsdd as fsdd_config


def _timed(fn, args, reps: int) -> tuple[float, float]:
  """(wall, process CPU) seconds per call."""
  t, c = time.perf_counter(), time.process_time()
  for _ in range(reps):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / reps, (time.process_time() - c) / reps


def main(argv: list[str]) -> dict:
  p = argparse.ArgumentParser()
  p.add_argument("--chunks", default="0,8,16,32")
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--num_labels", type=int, default=30)
  p.add_argument("--out", default="")
  a = p.parse_args(argv)
  chunks = [int(c) for c in a.chunks.split(",")]
  if 0 not in chunks:
    raise ValueError(f"--chunks must include 0 (the plain baseline), got {a.chunks!r}.")
  if a.num_labels % 10 or a.num_labels <= 0:
    raise ValueError(f"--num_labels must be a positive multiple of 10, got {a.num_labels}.")

  cfg = fsdd_config.get_config("quick")
  tc = T.TrainConfig.from_config(cfg.train)
  ds = D.load_dataset("fsdd", progress=False)
  noise = D.load_background_noise()
  y = np.asarray(ds.train.labels)
  rng = np.random.default_rng(0)
  lab = np.concatenate(
    [rng.choice(np.flatnonzero(y == c), a.num_labels // 10, replace=False) for c in range(10)]
  )
  data = T.TrainData(
    jnp.asarray(np.asarray(ds.train.waveforms, np.float32)),
    jnp.asarray(y, jnp.int32),
    jnp.asarray(noise),
    jnp.float32(0.5),
    jnp.float32(0.2),
  )
  lab = jnp.asarray(lab, jnp.int32)
  model = T.create_model(tc, 10)

  # The model's train-mode forward+backward alone, on the step's input shape (B + K*B, 32, 32, 1)
  # with a cross-entropy against fixed soft targets: the only part the chunk changes.
  n_in = tc.batch_size * (1 + tc.num_augmentations)
  inputs = jnp.asarray(rng.standard_normal((n_in, 32, 32, 1)), jnp.float32)
  targets = jax.nn.softmax(jnp.asarray(rng.standard_normal((n_in, 10)), jnp.float32))

  calls, compile_s = {}, {}
  for chunk in chunks:
    m = model.clone(weight_grad_chunk=chunk)
    state = T.init_state(tc, m, jax.random.key(0))
    step = jax.jit(T.make_step(tc, m, 10, audio.featurize, audio.augment_and_featurize))

    def fwd_bwd(params, batch_stats, m=m):
      def loss(p):
        (logits, _), upd = m.apply(
          {"params": p, "batch_stats": batch_stats}, inputs, train=True, mutable=["batch_stats"]
        )
        return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), -1)), upd

      return jax.grad(loss, has_aux=True)(params)

    t = time.perf_counter()
    jax.block_until_ready(step(state, data, lab))
    compile_s[chunk] = time.perf_counter() - t
    calls[("step", chunk)] = (step, (state, data, lab))
    calls[("fwd_bwd", chunk)] = (jax.jit(fwd_bwd), (state.params, state.batch_stats))
  for fn, args in calls.values():  # warm
    _timed(fn, args, 1)
  wall = {k: [] for k in calls}
  cpu = {k: [] for k in calls}
  for r in range(a.rounds):
    for k in calls:
      w, u = _timed(*calls[k], a.reps)
      wall[k].append(w)
      cpu[k].append(u)
    print(
      f"round {r}: "
      + ", ".join(f"{k[0]} chunk{k[1]} {wall[k][-1]:.3f}s/{cpu[k][-1]:.3f}cpu" for k in calls),
      file=sys.stderr,
      flush=True,
    )
  ratios = lambda v, k: np.asarray(v[k]) / np.asarray(v[(k[0], 0)])
  ratio = lambda v, k: float(np.median(ratios(v, k)))
  quartiles = lambda v, k: np.percentile(ratios(v, k), [25, 75]).tolist()
  result = {
    "command": "python -m benchmarks.small_cnn_grad_chunk " + " ".join(argv),
    "what": "quick config (experiments/configs/fsdd.py:quick) small_cnn MixMatch step, batch "
    f"{tc.batch_size} + {tc.num_augmentations} x {tc.batch_size}, jitted, not donated",
    "backend": jax.default_backend(),
    "jax": jax.__version__,
    "rounds": a.rounds,
    "reps_per_round": a.reps,
    "num_labels": a.num_labels,
    "compile_and_first_call_s": {f"chunk{c}": compile_s[c] for c in chunks},
    "fwd_bwd": f"model train forward+backward alone on ({n_in}, 32, 32, 1) inputs",
    "variants": {
      f"{k[0]} chunk{k[1]}": {
        "wall_s_median": statistics.median(wall[k]),
        "cpu_s_median": statistics.median(cpu[k]),
        "wall_ratio_to_chunk0": ratio(wall, k),
        "cpu_ratio_to_chunk0": ratio(cpu, k),
        "wall_ratio_quartiles": quartiles(wall, k),
        "cpu_ratio_quartiles": quartiles(cpu, k),
        "wall_s_rounds": wall[k],
        "cpu_s_rounds": cpu[k],
      }
      for k in calls
    },
  }
  if a.out:
    io.atomic_write_json(a.out, result)
  return result


if __name__ == "__main__":
  import json

  print(json.dumps(main(sys.argv[1:]), indent=1))
