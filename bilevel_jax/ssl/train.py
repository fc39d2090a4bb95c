"""Supervised and MixMatch training from raw waveforms: the training loop.

Data stay on device: the step (`ssl.step`) samples indices, gathers waveforms, augments and
computes log-mel features inside jit, so there is no host input pipeline. The state and settings
live in `ssl.state`, the ways of stepping S seeds in `ssl.runners`, checkpoints in
`ssl.checkpoint`. Every step's randomness is `fold_in(state.key, state.step)`, so a run resumed
from a checkpoint reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.ssl.checkpoint import Checkpoints

# The public names of the training API, re-exported (callers use `ssl.train.<name>`).
from bilevel_jax.ssl.runners import (
  compiled_run_steps,
  config_reaches_threads,  # noqa: F401
  make_run_steps,
  resolve_seed_mode,
  seed_thread_count,
)
from bilevel_jax.ssl.state import (
  METHODS,
  PRECISIONS,
  SEED_MODES,  # noqa: F401
  AugmentFeaturizeFn,
  Classifier,
  FeaturizeFn,
  TrainConfig,
  TrainData,
  TrainResult,
  TrainState,
  create_model,
  default_audio,
  feature_stats,
  init_state,
  lr_schedule,
  make_optimizer,
  validate,
)
from bilevel_jax.ssl.step import make_step  # noqa: F401
from bilevel_jax.utils import budget as budget_lib
from bilevel_jax.utils.metrics import MetricWriter
from bilevel_jax.utils.progress import Progress

log = logging.getLogger(__name__)


def train_many(
  config: Any,
  waveforms: np.ndarray,
  labels: np.ndarray,
  labeled_idx: np.ndarray,
  keys: jax.Array,
  *,
  num_classes: int,
  noise: np.ndarray | None = None,
  featurize_fn: FeaturizeFn | None = None,
  augment_featurize_fn: AugmentFeaturizeFn | None = None,
  workdir: str | pathlib.Path | None = None,
  require_all_classes: bool = False,
  vmapped: bool = True,
  progress: bool = True,
  callback: Callable[[int, TrainState], None] | None = None,
  deadline: budget_lib.Deadline | None = None,
  desc: str | None = None,
) -> TrainResult:
  """Trains S models (one per key / labeled set).

  Args:
    config: TrainConfig or the `train` ConfigDict of an experiment config.
    waveforms: (N, T) float32 training clips (all of them are the unlabeled set).
    labels: (N,) int32; only labels[labeled_idx] are used for training.
    labeled_idx: (S, L) labeled indices per seed (equal sizes).
    keys: (S,) typed PRNG keys (init and data order per seed).
    num_classes: C.
    noise: (K, L) background noise for augmentation (zeros(1, T) if None).
    featurize_fn / augment_featurize_fn: log-mel without / with augmentation (defaults:
      bilevel_jax.audio.featurize / augment_and_featurize).
    workdir: if set, Orbax checkpoints (resumed when present) and metrics go there.
    require_all_classes: reject labeled sets that miss a class.
    vmapped: if False the S models are trained one after another (in `workdir/seed<s>`).
    progress: a progress bar (else a log line per logged chunk).
    callback: called as callback(step, state) after every logged chunk (tests use it to kill).
    deadline: when it expires, the training saves a checkpoint (with a workdir) and raises
      budget.TimeBudgetExceeded.
    desc: label of the progress bar / log lines.

  Returns:
    TrainResult with states stacked along axis 0 and one Classifier per seed.
  """
  tc = config if isinstance(config, TrainConfig) else TrainConfig.from_config(config)
  waveforms = np.asarray(waveforms, np.float32)
  labeled_idx = np.asarray(labeled_idx)
  if waveforms.ndim != 2:
    raise ValueError(f"waveforms must be (N, T); got shape {waveforms.shape}.")
  validate(tc, waveforms.shape[0], labels, labeled_idx, num_classes, require_all_classes)
  num_seeds = labeled_idx.shape[0]
  if jnp.shape(keys) != (num_seeds,):
    raise ValueError(
      f"need one key per labeled set: keys {jnp.shape(keys)}, labeled {labeled_idx.shape}."
    )
  if featurize_fn is None or augment_featurize_fn is None:
    default_feat, default_aug = default_audio()
    featurize_fn = featurize_fn or default_feat
    augment_featurize_fn = augment_featurize_fn or default_aug
  if noise is None:
    noise = np.zeros((1, waveforms.shape[1]), np.float32)
  common = dict(
    num_classes=num_classes,
    noise=noise,
    featurize_fn=featurize_fn,
    augment_featurize_fn=augment_featurize_fn,
    progress=progress,
    callback=callback,
    deadline=deadline or budget_lib.NO_DEADLINE,
    desc=desc or f"{tc.method} x{num_seeds if vmapped else 1}",
  )
  if vmapped:
    return _train_seeds(tc, waveforms, labels, labeled_idx, keys, workdir=workdir, **common)
  results = [
    _train_seeds(
      tc,
      waveforms,
      labels,
      labeled_idx[s : s + 1],
      keys[s : s + 1],
      workdir=None if workdir is None else pathlib.Path(workdir) / f"seed{s}",
      **common,
    )
    for s in range(num_seeds)
  ]
  return TrainResult(
    jax.tree.map(lambda *xs: jnp.concatenate(xs), *[r.state for r in results]),
    sum((r.classifiers for r in results), []),
    results[0].history,
    sum(r.seconds for r in results),
    float(np.mean([r.steps_per_second for r in results])),
    float(np.mean([r.cpu_seconds_per_step for r in results])),
  )


def train(
  config: Any,
  waveforms: np.ndarray,
  labels: np.ndarray,
  labeled_idx: np.ndarray,
  key: jax.Array,
  **kwargs: Any,
) -> TrainResult:
  """One model: labeled_idx (L,), key a typed PRNG key. Same keywords as `train_many`."""
  labeled_idx = np.asarray(labeled_idx)
  if labeled_idx.ndim != 1:
    raise ValueError(f"train() takes labeled indices of shape (L,); got {labeled_idx.shape}.")
  return train_many(config, waveforms, labels, labeled_idx[None], key[None], **kwargs)


def _next_stop(tc: TrainConfig, step: int, piece: int) -> int:
  """End of the next call: at most `piece` steps, never past a log or checkpoint boundary."""
  boundary = min((step // every + 1) * every for every in (tc.log_every, tc.checkpoint_every))
  return min(step + piece, boundary, tc.steps)


def _train_seeds(
  tc: TrainConfig,
  waveforms,
  labels,
  labeled_idx,
  keys,
  *,
  num_classes,
  noise,
  featurize_fn,
  augment_featurize_fn,
  workdir,
  progress,
  callback,
  deadline,
  desc,
) -> TrainResult:
  """The loop for S seeds in one state: restore, step in chunks, log, checkpoint, stop on time."""
  model = create_model(tc, num_classes)
  mean, std = feature_stats(featurize_fn, waveforms)
  data = TrainData(
    jnp.asarray(waveforms),
    jnp.asarray(labels, jnp.int32),
    jnp.asarray(noise, jnp.float32),
    jnp.float32(mean),
    jnp.float32(std),
  )
  input_shape = jax.eval_shape(
    featurize_fn, jax.ShapeDtypeStruct((1, waveforms.shape[1]), jnp.float32)
  ).shape[1:]
  state = jax.vmap(lambda k: init_state(tc, model, k, input_shape))(keys)
  lab = jnp.asarray(labeled_idx, jnp.int32)
  run_steps = compiled_run_steps(tc, model, num_classes, featurize_fn, augment_featurize_fn)
  checkpoints = Checkpoints(workdir)
  state = checkpoints.restore(state)
  writer = MetricWriter(workdir) if workdir is not None else None
  step = start = int(np.asarray(state.step)[0])
  # Calls of log_every steps; a tenth of that while a bar or a deadline needs to see progress.
  watched = progress or deadline.seconds is not None
  piece = max(1, tc.log_every // 10) if watched else tc.log_every
  bar = Progress(tc.steps, initial=start, desc=desc, enabled=progress, leave=False, logger=log)
  history, row, row_steps = [], {}, 0
  t0, t_first, cpu_first, steps_after_first = time.perf_counter(), None, None, 0
  try:
    while step < tc.steps:
      n = _next_stop(tc, step, piece) - step
      state, metrics = run_steps(state, data, lab, jnp.int32(n))
      metrics = jax.device_get(metrics)  # one host sync per call
      step += n
      if t_first is None:
        t_first, cpu_first = time.perf_counter(), time.process_time()
      else:
        steps_after_first += n
      for k, v in metrics.items():
        row[k] = row.get(k, 0.0) + np.float64(np.mean(v)) * n
      row_steps += n
      bar.update(n, loss=f"{metrics['loss'].mean():.3f}")
      if step % tc.log_every == 0 or step == tc.steps:
        scalars = {f"train/{k}": float(v / row_steps) for k, v in row.items()}
        history.append({"step": step, **scalars})
        row, row_steps = {}, 0
        if writer is not None:
          writer.write_scalars(step, scalars)
        bar.log("step %d/%d loss %.4f", step, tc.steps, scalars["train/loss"])
      if step % tc.checkpoint_every == 0 or step == tc.steps:
        checkpoints.save(step, state)
      if callback is not None and not row_steps:
        callback(step, state)
      if deadline.expired() and step < tc.steps:
        checkpoints.save(step, state)
        raise budget_lib.TimeBudgetExceeded(
          f"time budget of {deadline.seconds} s spent at step {step}/{tc.steps} of {desc}"
          + (f"; checkpoint in {workdir}" if workdir is not None else " (no workdir: lost)")
        )
    jax.block_until_ready(state)
  finally:
    bar.close()
    if writer is not None:
      writer.close()
    checkpoints.close()
  t1, cpu1 = time.perf_counter(), time.process_time()
  sps = steps_after_first / (t1 - t_first) if steps_after_first else float("nan")
  cps = (cpu1 - cpu_first) / steps_after_first if steps_after_first else float("nan")
  classifiers = [
    Classifier(
      model,
      {
        "params": jax.tree.map(lambda v: v[s], state.ema_params),
        "batch_stats": jax.tree.map(lambda v: v[s], state.batch_stats),
      },
      mean,
      std,
      featurize_fn,
      augment_featurize_fn,
      data.noise,
    )
    for s in range(labeled_idx.shape[0])
  ]
  return TrainResult(state, classifiers, history, t1 - t0, sps, cps)
