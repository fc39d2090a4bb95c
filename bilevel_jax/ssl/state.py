"""Training state and settings: TrainConfig, the state pytree, validation, init, input scaling.

Input normalization (one rule, used by training and prediction): `audio.featurize` maps a
waveform to log-mel features with a fixed affine map (no dataset statistics). The classifier
then standardizes those features by ONE scalar mean and standard deviation, `feature_stats`:
the mean and std over all values of the un-augmented features of the first 512 training clips
(in the given order) of the run. The two scalars are part of the trained `Classifier` (and of
the round-0 model files), so prediction applies the same affine map; augmented features are
standardized with the same two numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bilevel_jax.models import get_model

FeaturizeFn = Callable[[jax.Array], jax.Array]  # (B, T) waveforms -> (B, 32, 32, 1)
AugmentFeaturizeFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # key, (B,T), (K,L)
METHODS = ("mixmatch", "supervised", "supervised_aug")
SEED_MODES = ("auto", "vmap", "map", "host", "vmap_host")
PRECISIONS = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyperparameters of one training run (hashable: static under jit).

  `ema_decay` is capped by (1 + t) / (10 + t) at step t so that short runs average
  trained weights instead of the random init. Weight decay is decoupled, as in the MixMatch
  reference code: after every update conv/dense kernels are multiplied by
  (1 - weight_decay * lr_t), lr_t the current learning rate.
  """

  method: str = "mixmatch"
  steps: int = 100_000
  batch_size: int = 64
  lr: float = 1e-3
  lr_end: float = 1e-5
  ema_decay: float = 0.999
  weight_decay: float = 0.02
  lambda_u: float = 10.0
  rampup_steps: int = 16_000
  temperature: float = 0.5
  mixup_alpha: float = 0.75
  num_augmentations: int = 2
  model: str = "wide_resnet"
  depth: int = 28
  width: int = 2
  bn_momentum: float = 0.999
  log_every: int = 100
  checkpoint_every: int = 1000
  # How train_many runs the seeds and steps: "vmap" (one program, seeds batched, steps in a
  # lax loop; fast on accelerators), "map" (one program, lax.map over seeds), "host" (a jitted
  # single-model step called from a Python loop over seeds and steps), "vmap_host" (a jitted
  # vmapped step called from a Python loop over steps), or "auto" (host on CPU,
  # vmap elsewhere). Why host on CPU: XLA:CPU (jax 0.10.2) runs the convolutions of the step
  # ~17x slower inside a while-loop body than in a plain jitted call (WRN-10-1, batch 64x3:
  # 7.6 s vs 0.44 s per step), and vmap turns them into grouped convolutions that are slow too.
  seed_mode: str = "auto"
  # "host" mode: how many seeds step at the same time, each from its own Python thread (0:
  # min(S, CPU cores)). Each seed's numbers are unchanged. Why: one step leaves the cores
  # partly idle (small convolutions, host dispatch), so with two threads 6 seeds finished
  # 1.11x the model steps per second of one seed at a time and 1.19x that of 6 separate runs
  # on 2 cores (benchmarks/results/vmap_seeds_cpu_threads.json). Inside thread-local JAX
  # config contexts (`with jax.default_matmul_precision(...)`, `jax.default_device`, ...),
  # which worker threads do not see, the seeds step one at a time instead.
  seed_threads: int = 0
  # Arithmetic of the forward and backward pass: "float32", or "bfloat16" (parameters, optimizer
  # state, batch-norm statistics, losses and updates stay float32; only the network's inputs and
  # a bfloat16 copy of its parameters enter the convolutions). For accelerators with fast bf16.
  precision: str = "float32"
  # "host" / "vmap_host" modes: steps per jitted call (a lax.scan over a chunk of steps), so the
  # host dispatches once per chunk. The "vmap", "map" and single-model runners already run a
  # whole logging chunk (log_every steps) per call. Same numbers as 1 up to float rounding.
  steps_per_call: int = 1

  @classmethod
  def from_config(cls, cfg: Any, **overrides: Any) -> "TrainConfig":
    """Reads the fields present in an ml_collections ConfigDict (or mapping)."""
    names = {f.name for f in dataclasses.fields(cls)}
    items = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
    unknown = set(items) - names
    if unknown:
      raise ValueError(f"Unknown training config keys {sorted(unknown)}; known: {sorted(names)}.")
    items.update(overrides)
    return cls(**items)


def comparable_train_config(train_config: dict) -> dict:
  """The training entries a model depends on, as files written before later entries named them.

  seed_threads and steps_per_call only schedule the steps; precision joined the config later
  and its default (float32) is what every earlier file used. Leaving them out keeps names valid.
  """
  out = {k: v for k, v in train_config.items() if k not in ("seed_threads", "steps_per_call")}
  if out.get("precision") == "float32":
    del out["precision"]
  return out


class TrainState(NamedTuple):
  """Whole training state; a pytree (stacked along a leading seed axis by `train_many`)."""

  step: jax.Array  # () int32
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  key: jax.Array  # (2,) uint32 raw key data; step t uses fold_in(key, t)


class TrainData(NamedTuple):
  """Device-resident training set shared by all seeds."""

  waveforms: jax.Array  # (N, T) float32
  labels: jax.Array  # (N,) int32
  noise: jax.Array  # (K, L) float32 background noise for augmentation
  feature_mean: jax.Array  # () scalar normalisation of log-mel features
  feature_std: jax.Array  # ()


class Classifier(NamedTuple):
  """Everything `predict` needs for one trained model (EMA weights)."""

  model: nn.Module
  variables: Any  # {"params": EMA params, "batch_stats": running stats}
  feature_mean: float
  feature_std: float
  featurize_fn: FeaturizeFn
  augment_featurize_fn: AugmentFeaturizeFn
  noise: jax.Array


class TrainResult(NamedTuple):
  state: TrainState  # final state (leading axis S for train_many)
  classifiers: list  # [Classifier] one per seed
  history: list  # logged scalar dicts (mean over seeds)
  seconds: float  # wall time of the training loop (compilation included)
  steps_per_second: float  # steps of one model per second, excluding the first (compiling) chunk
  cpu_seconds_per_step: float  # process CPU time (all threads) per step after the first chunk


def validate(
  tc: TrainConfig,
  num_train: int,
  labels: np.ndarray,
  labeled_idx: np.ndarray,
  num_classes: int,
  require_all_classes: bool,
) -> None:
  """Raises ValueError naming the bad setting; called before anything is compiled."""
  if tc.seed_mode not in SEED_MODES:
    raise ValueError(f"train.seed_mode={tc.seed_mode!r}; expected one of {SEED_MODES}.")
  if tc.seed_threads < 0:
    raise ValueError(f"train.seed_threads={tc.seed_threads}; expected >= 0 (0 = auto).")
  if tc.precision not in PRECISIONS:
    raise ValueError(f"train.precision={tc.precision!r}; expected one of {PRECISIONS}.")
  if tc.steps_per_call < 1:
    raise ValueError(f"train.steps_per_call={tc.steps_per_call}; expected >= 1.")
  if tc.method not in METHODS:
    raise ValueError(f"train.method={tc.method!r}; expected one of {METHODS}.")
  checks = [
    (tc.steps >= 1, f"train.steps={tc.steps}; expected >= 1."),
    (tc.batch_size >= 1, f"train.batch_size={tc.batch_size}; expected >= 1."),
    (
      tc.batch_size <= num_train,
      f"train.batch_size={tc.batch_size} is larger than the training set ({num_train} clips).",
    ),
    (
      tc.lr > 0 and tc.lr_end >= 0,
      f"train.lr={tc.lr}, lr_end={tc.lr_end}; expected lr > 0, lr_end >= 0.",
    ),
    (0.0 <= tc.ema_decay < 1.0, f"train.ema_decay={tc.ema_decay}; expected in [0, 1)."),
    (
      0.0 <= tc.weight_decay * tc.lr < 1.0,
      f"train.weight_decay={tc.weight_decay}; expected 0 <= weight_decay * lr < 1.",
    ),
    (tc.lambda_u >= 0, f"train.lambda_u={tc.lambda_u}; expected >= 0."),
    (tc.temperature > 0, f"train.temperature={tc.temperature}; expected > 0."),
    (tc.mixup_alpha > 0, f"train.mixup_alpha={tc.mixup_alpha}; expected > 0."),
    (tc.num_augmentations >= 1, f"train.num_augmentations={tc.num_augmentations}; expected >= 1."),
    (
      tc.log_every >= 1 and tc.checkpoint_every >= 1,
      f"train.log_every={tc.log_every}, checkpoint_every={tc.checkpoint_every}; expected >= 1.",
    ),
    (num_classes >= 2, f"num_classes={num_classes}; expected >= 2."),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(message)
  labels = np.asarray(labels)
  if labels.shape != (num_train,):
    raise ValueError(f"labels have shape {labels.shape}; expected ({num_train},).")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
      f"labels must lie in [0, {num_classes}); got range [{labels.min()}, {labels.max()}]."
    )
  labeled_idx = np.asarray(labeled_idx)
  if labeled_idx.ndim != 2:
    raise ValueError(f"labeled indices must be (S, L); got shape {labeled_idx.shape}.")
  if labeled_idx.shape[1] == 0:
    raise ValueError("Zero labeled points: the labeled index set is empty.")
  if not np.issubdtype(labeled_idx.dtype, np.integer):
    raise ValueError(f"labeled indices must be integers; got dtype {labeled_idx.dtype}.")
  if labeled_idx.min() < 0 or labeled_idx.max() >= num_train:
    raise ValueError(
      f"labeled indices must lie in [0, {num_train}); got range "
      f"[{labeled_idx.min()}, {labeled_idx.max()}]."
    )
  for s, row in enumerate(labeled_idx):
    if len(np.unique(row)) != len(row):
      raise ValueError(f"labeled indices of seed {s} contain duplicates.")
    if require_all_classes:
      missing = sorted(set(range(num_classes)) - set(labels[row].tolist()))
      if missing:
        raise ValueError(
          f"labeled set of seed {s} has no label for classes {missing}; the "
          "protocol requires every class to be represented."
        )


def create_model(tc: TrainConfig, num_classes: int) -> nn.Module:
  return get_model(
    tc.model, num_classes=num_classes, depth=tc.depth, width=tc.width, bn_momentum=tc.bn_momentum
  )


def lr_schedule(tc: TrainConfig) -> optax.Schedule:
  """Learning rate decayed linearly lr -> lr_end over the run."""
  return optax.linear_schedule(tc.lr, tc.lr_end, max(tc.steps - 1, 1))


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
  return optax.adam(lr_schedule(tc))


def init_state(
  tc: TrainConfig, model: nn.Module, key: jax.Array, input_shape: Sequence[int] = (32, 32, 1)
) -> TrainState:
  """Fresh state from a typed PRNG key."""
  init_key, train_key = jax.random.split(key)
  variables = model.init(init_key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables["batch_stats"],
    opt_state=make_optimizer(tc).init(params),
    ema_params=jax.tree.map(jnp.copy, params),  # own buffers: the state is donated
    key=jax.random.key_data(train_key),
  )


def feature_stats(
  featurize_fn: FeaturizeFn, waveforms: np.ndarray, max_clips: int = 512, batch: int = 128
) -> tuple[float, float]:
  """Scalar mean and std of un-augmented log-mel features over the first max_clips clips."""
  feats = [
    np.asarray(jax.jit(featurize_fn)(jnp.asarray(waveforms[i : i + batch])))
    for i in range(0, min(len(waveforms), max_clips), batch)
  ]
  f = np.concatenate(feats)
  return float(f.mean()), float(f.std() + 1e-6)


def default_audio() -> tuple[FeaturizeFn, AugmentFeaturizeFn]:
  """(featurize, augment_and_featurize) of bilevel_jax.audio: what train_many uses by default."""
  from bilevel_jax import audio  # pylint: disable=g-import-not-at-top

  return audio.featurize, audio.augment_and_featurize
