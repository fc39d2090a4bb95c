"""One training step of one model (MixMatch, supervised, supervised + augmentation), un-jitted.

Every step's randomness is `fold_in(state.key, state.step)`, so any split of a training into
calls, chunks or processes (resume from a checkpoint) gives the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bilevel_jax.ssl import mixmatch
from bilevel_jax.ssl.state import (
  AugmentFeaturizeFn,
  FeaturizeFn,
  TrainConfig,
  TrainData,
  TrainState,
  lr_schedule,
  make_optimizer,
)

StepFn = Callable[[TrainState, TrainData, jax.Array], tuple[TrainState, dict]]


def _decay_kernels(params: Any, factor: jax.Array) -> Any:
  def f(path, p):
    return p * factor if getattr(path[-1], "key", None) == "kernel" else p

  return jax.tree_util.tree_map_with_path(f, params)


def _cast_floats(tree: Any, dtype: Any) -> Any:
  return jax.tree.map(
    lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree
  )


def make_step(
  tc: TrainConfig,
  model: nn.Module,
  num_classes: int,
  featurize_fn: FeaturizeFn,
  augment_featurize_fn: AugmentFeaturizeFn,
) -> StepFn:
  """Returns step(state, data, labeled_idx (L,)) -> (state, metrics) for one model (un-jitted)."""
  optimizer = make_optimizer(tc)
  b, k_aug = tc.batch_size, tc.num_augmentations
  compute_dtype = jnp.bfloat16 if tc.precision == "bfloat16" else None
  # augment_groups(keys, waveform_groups, noise): the function's batched `groups` form where it
  # has one (audio.augment_and_featurize), else one call per group; the draws are the same.
  augment_groups = getattr(augment_featurize_fn, "groups", None) or (
    lambda keys, groups, noise: [augment_featurize_fn(k, w, noise) for k, w in zip(keys, groups)]
  )

  def forward(params, batch_stats, inputs):
    if compute_dtype is not None:
      # bf16 copies enter the network; gradients flow back through the casts as float32.
      params, inputs = _cast_floats(params, compute_dtype), inputs.astype(compute_dtype)
    (logits, _), upd = model.apply(
      {"params": params, "batch_stats": batch_stats}, inputs, train=True, mutable=["batch_stats"]
    )
    if compute_dtype is not None:
      return logits.astype(jnp.float32), _cast_floats(upd["batch_stats"], jnp.float32)
    return logits, upd["batch_stats"]

  def step(state: TrainState, data: TrainData, labeled_idx: jax.Array):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    k_lab, k_unl, k_auglab, k_augunl, k_mix = jax.random.split(key, 5)
    n_lab = labeled_idx.shape[0]
    idx = labeled_idx[jax.random.choice(k_lab, n_lab, (b,), replace=n_lab < b)]
    y = jax.nn.one_hot(data.labels[idx], num_classes)
    norm = lambda f: (f - data.feature_mean) / data.feature_std
    if tc.method == "mixmatch":
      uidx = jax.random.choice(k_unl, data.waveforms.shape[0], (b,), replace=False)
      waves_u = jnp.tile(data.waveforms[uidx], (k_aug, 1))  # (K*B, T)
      # All groups' augmented log-mels in one batched front-end call per step (same draws).
      x, u = map(
        norm, augment_groups([k_auglab, k_augunl], [data.waveforms[idx], waves_u], data.noise)
      )
    elif tc.method == "supervised":
      x = norm(featurize_fn(data.waveforms[idx]))
    else:
      x = norm(augment_featurize_fn(k_auglab, data.waveforms[idx], data.noise))

    if tc.method == "mixmatch":
      # Label guessing uses batch statistics of the guess batch; its stat updates are dropped.
      logits_u, _ = forward(state.params, state.batch_stats, u)
      q = mixmatch.guess_labels(logits_u.reshape(k_aug, b, num_classes), tc.temperature)
      inputs, targets = mixmatch.mixmatch_batch(
        k_mix, x, y, u, jnp.tile(q, (k_aug, 1)), tc.mixup_alpha
      )
      weight_u = mixmatch.rampup_weight(state.step, tc.lambda_u, tc.rampup_steps)

      def loss_fn(params):
        logits, stats = forward(params, state.batch_stats, inputs)
        loss, (lx, lu) = mixmatch.mixmatch_loss(logits, targets, b, weight_u)
        return loss, (stats, lx, lu)
    else:
      weight_u = jnp.zeros((), jnp.float32)

      def loss_fn(params):
        logits, stats = forward(params, state.batch_stats, x)
        lx = mixmatch.soft_cross_entropy(logits, y)
        return lx, (stats, lx, jnp.zeros_like(lx))

    (loss, (stats, lx, lu)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = _decay_kernels(params, 1.0 - tc.weight_decay * lr_schedule(tc)(state.step))
    t = state.step.astype(jnp.float32)
    decay = jnp.minimum(tc.ema_decay, (1.0 + t) / (10.0 + t))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    new_state = TrainState(state.step + 1, params, stats, opt_state, ema, state.key)
    return new_state, {"loss": loss, "loss_x": lx, "loss_u": lu, "weight_u": weight_u}

  return step


@functools.lru_cache(maxsize=16)
def cached_step(
  tc: TrainConfig,
  model: nn.Module,
  num_classes: int,
  featurize_fn: FeaturizeFn,
  augment_featurize_fn: AugmentFeaturizeFn,
) -> StepFn:
  """make_step, one function object per setting that changes the step: runners that differ
  only in how they drive it (seed_threads, steps_per_call) share JAX's trace caches."""
  return make_step(tc, model, num_classes, featurize_fn, augment_featurize_fn)


def step_settings(tc: TrainConfig) -> TrainConfig:
  """`tc` with the entries that do not change the step function reset."""
  return dataclasses.replace(tc, seed_threads=0, steps_per_call=1, seed_mode="auto")
