"""Does the main job's round 0 depend on the number of CPU threads XLA may use? (issue 16.8)

Runs the pieces of the quick FSDD job that feed the bilevel rows, on the real data, and writes
digests and the arrays themselves so that runs under different CPU affinities / XLA flags can
be compared bit for bit:
  * the round-0 model after `--steps` MixMatch steps (quick config, seed 0) and its clean pool
    predictions (the `pool_accuracy` of round 0);
  * NTK rows k(X[:rows], U) (depth 10, the quick config's 256 landmarks) and the log-mel
    normalization statistics.

  taskset -c 0   python -m benchmarks.repro_threads --out=runs/repro_one.npz
  taskset -c 0,1 python -m benchmarks.repro_threads --out=runs/repro_two.npz
  python -m benchmarks.repro_threads --compare runs/repro_one.npz runs/repro_two.npz   # -> JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np


def _digest(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def run(out: str, steps: int, rows: int) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from experiments.configs import fsdd  # pylint: disable=g-import-not-at-top
  from bilevel_jax import audio  # pylint: disable=g-import-not-at-top
  from bilevel_jax.al import loop, outputs, pool  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ntk import kernel_matrix as km, nystrom  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ssl import train as ssl_train  # pylint: disable=g-import-not-at-top

  config = fsdd.get_config("quick")
  config.progress = False
  config.train.steps = steps
  data = loop.load_data(config)
  labels = data.train_labels
  init = pool.initial_pool(
    pool.round_key(pool.streams(0).pool, 0), labels, config.al.initial, data.num_classes
  )
  t0 = time.perf_counter()
  result = ssl_train.train_many(
    config.train,
    data.train_waveforms,
    labels,
    init[None],
    jax.numpy.stack([pool.round_key(pool.streams(0).train, 0)]),
    num_classes=data.num_classes,
    noise=data.noise,
    progress=False,
  )
  train_s = time.perf_counter() - t0
  clf = result.classifiers[0]
  outs = outputs.model_outputs(
    clf,
    data.train_waveforms,
    key=jax.random.key(0),
    num_augmentations=0,
    batch_size=config.predict_chunk,
  )
  params = np.concatenate(
    [np.asarray(x, np.float32).ravel() for x in jax.tree.leaves(clf.variables)]
  )
  mean, std = ssl_train.feature_stats(audio.featurize, data.train_waveforms)
  featurize = jax.jit(lambda w: (audio.featurize(w) - mean) / std)
  n = labels.shape[0]
  landmark_idx = nystrom.draw_landmarks(jax.random.key(0), n, int(config.bilevel.landmarks))
  x_rows = np.asarray(featurize(jax.numpy.asarray(data.train_waveforms[: max(rows, 1)])))
  x_land = np.concatenate(
    [
      np.asarray(
        featurize(jax.numpy.asarray(data.train_waveforms[np.asarray(landmark_idx)[i : i + 128]]))
      )
      for i in range(0, len(landmark_idx), 128)
    ]
  )
  cfg = km.make_config(depth=int(config.bilevel.ntk_depth))
  t0 = time.perf_counter()
  k = (
    np.asarray(km.kernel_rows(x_rows, x_land, cfg, tile=(16, 16), kind="ntk")[0])
    if rows
    else np.zeros((0,), np.float32)
  )
  kernel_s = time.perf_counter() - t0
  np.savez(
    out,
    params=params,
    probs=outs.probs,
    kernel=k,
    stats=np.array([mean, std]),
    info=json.dumps(
      dict(
        affinity=sorted(os.sched_getaffinity(0)),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        steps=steps,
        rows=rows,
        train_seconds=train_s,
        kernel_seconds=kernel_s,
        pool_accuracy=float(np.mean(outs.probs.argmax(-1) == labels)),
        digests=dict(params=_digest(params), probs=_digest(outs.probs), kernel=_digest(k)),
        jax=jax.__version__,
        python=platform.python_version(),
      )
    ),
  )


def probe(out: str) -> None:
  """One forward/backward pass of the quick job's model on fixed random log-mels (no data):
  a seconds-long check of whether an XLA setting removes the thread-count dependence."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from bilevel_jax.models import small_cnn  # pylint: disable=g-import-not-at-top

  model = small_cnn.SmallCNN(num_classes=10)
  x = jax.random.normal(jax.random.key(0), (192, 32, 32, 1))
  variables = model.init(jax.random.key(1), x[:1])

  @jax.jit
  def grads(params, x):
    def loss(p):
      logits, _ = model.apply({**variables, "params": p}, x, train=True, mutable=["batch_stats"])[0]
      return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    return jax.grad(loss)(params)

  g = np.concatenate(
    [np.asarray(v).ravel() for v in jax.tree.leaves(grads(variables["params"], x))]
  )
  t0 = time.perf_counter()
  for _ in range(20):
    jax.block_until_ready(grads(variables["params"], x))
  np.savez(
    out,
    params=g,
    info=json.dumps(
      dict(
        affinity=sorted(os.sched_getaffinity(0)),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        probe=True,
        seconds_per_grad=(time.perf_counter() - t0) / 20,
        digests=dict(params=_digest(g)),
        jax=jax.__version__,
      )
    ),
  )


def compare(paths: list[str]) -> dict:
  runs = [np.load(p) for p in paths]
  base = runs[0]
  out = {"runs": [json.loads(str(r["info"])) for r in runs], "vs_first": []}
  for p, r in zip(paths[1:], runs[1:]):
    row = {"path": os.path.basename(p)}
    for name in ("params", "probs", "kernel", "stats"):
      if name not in base or name not in r:
        continue
      a, b = base[name].astype(np.float64), r[name].astype(np.float64)
      if a.shape != b.shape or a.size == 0:
        continue
      row[name] = dict(
        bitwise_equal=bool(np.array_equal(base[name], r[name])),
        max_abs_diff=float(np.max(np.abs(a - b))),
        max_rel_diff=float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-30))),
      )
    if "probs" in base and "probs" in r:
      row["argmax_changed"] = int(np.sum(base["probs"].argmax(-1) != r["probs"].argmax(-1)))
    out["vs_first"].append(row)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--rows", type=int, default=32)
  parser.add_argument("--compare", nargs="+")
  parser.add_argument("--probe", action="store_true", help="one gradient, random inputs")
  args = parser.parse_args()
  if args.compare:
    json.dump(compare(args.compare), sys.stdout, indent=1)
    print()
  elif args.probe:
    probe(args.out)
  else:
    run(args.out, args.steps, args.rows)


if __name__ == "__main__":
  main()
