"""Supervised and MixMatch training from raw waveforms, one jitted step, seeds batched.

Data stay on device: the step samples indices, gathers waveforms, augments and computes
log-mel features inside jit, so there is no host input pipeline. Every step's randomness is
`fold_in(state.key, state.step)`, so a run resumed from an Orbax checkpoint reproduces the
uninterrupted run exactly.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import pathlib
import time
from typing import Any, Callable, NamedTuple, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bilevel_jax.models import get_model
from bilevel_jax.ssl import mixmatch

FeaturizeFn = Callable[[jax.Array], jax.Array]  # (B, T) waveforms -> (B, 32, 32, 1)
AugmentFeaturizeFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # key, (B,T), (K,L)
METHODS = ("mixmatch", "supervised", "supervised_aug")
SEED_MODES = ("auto", "vmap", "map", "host", "vmap_host")


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


class TrainState(NamedTuple):
  """Whole training state; a pytree (stacked along a leading seed axis by `train_many`)."""
  step: jax.Array          # () int32
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  key: jax.Array           # (2,) uint32 raw key data; step t uses fold_in(key, t)


class TrainData(NamedTuple):
  """Device-resident training set shared by all seeds."""
  waveforms: jax.Array     # (N, T) float32
  labels: jax.Array        # (N,) int32
  noise: jax.Array         # (K, L) float32 background noise for augmentation
  feature_mean: jax.Array  # () scalar normalisation of log-mel features
  feature_std: jax.Array   # ()


class Classifier(NamedTuple):
  """Everything `predict` needs for one trained model (EMA weights)."""
  model: nn.Module
  variables: Any           # {"params": EMA params, "batch_stats": running stats}
  feature_mean: float
  feature_std: float
  featurize_fn: FeaturizeFn
  augment_featurize_fn: AugmentFeaturizeFn
  noise: jax.Array


class TrainResult(NamedTuple):
  state: TrainState        # final state (leading axis S for train_many)
  classifiers: list        # [Classifier] one per seed
  history: list            # logged scalar dicts (mean over seeds)
  seconds: float           # wall time of the training loop (compilation included)
  steps_per_second: float  # steps of one model per second, excluding the first (compiling) chunk
  cpu_seconds_per_step: float  # process CPU time (all threads) per step after the first chunk


def validate(tc: TrainConfig, num_train: int, labels: np.ndarray, labeled_idx: np.ndarray,
             num_classes: int, require_all_classes: bool) -> None:
  """Raises ValueError naming the bad setting; called before anything is compiled."""
  if tc.seed_mode not in SEED_MODES:
    raise ValueError(f"train.seed_mode={tc.seed_mode!r}; expected one of {SEED_MODES}.")
  if tc.seed_threads < 0:
    raise ValueError(f"train.seed_threads={tc.seed_threads}; expected >= 0 (0 = auto).")
  if tc.method not in METHODS:
    raise ValueError(f"train.method={tc.method!r}; expected one of {METHODS}.")
  checks = [
      (tc.steps >= 1, f"train.steps={tc.steps}; expected >= 1."),
      (tc.batch_size >= 1, f"train.batch_size={tc.batch_size}; expected >= 1."),
      (tc.batch_size <= num_train,
       f"train.batch_size={tc.batch_size} is larger than the training set ({num_train} clips)."),
      (tc.lr > 0 and tc.lr_end >= 0, f"train.lr={tc.lr}, lr_end={tc.lr_end}; expected lr > 0, "
       "lr_end >= 0."),
      (0.0 <= tc.ema_decay < 1.0, f"train.ema_decay={tc.ema_decay}; expected in [0, 1)."),
      (0.0 <= tc.weight_decay * tc.lr < 1.0, f"train.weight_decay={tc.weight_decay}; expected "
       "0 <= weight_decay * lr < 1."),
      (tc.lambda_u >= 0, f"train.lambda_u={tc.lambda_u}; expected >= 0."),
      (tc.temperature > 0, f"train.temperature={tc.temperature}; expected > 0."),
      (tc.mixup_alpha > 0, f"train.mixup_alpha={tc.mixup_alpha}; expected > 0."),
      (tc.num_augmentations >= 1,
       f"train.num_augmentations={tc.num_augmentations}; expected >= 1."),
      (tc.log_every >= 1 and tc.checkpoint_every >= 1,
       f"train.log_every={tc.log_every}, checkpoint_every={tc.checkpoint_every}; expected >= 1."),
      (num_classes >= 2, f"num_classes={num_classes}; expected >= 2."),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(message)
  labels = np.asarray(labels)
  if labels.shape != (num_train,):
    raise ValueError(f"labels have shape {labels.shape}; expected ({num_train},).")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes}); got range "
                     f"[{labels.min()}, {labels.max()}].")
  labeled_idx = np.asarray(labeled_idx)
  if labeled_idx.ndim != 2:
    raise ValueError(f"labeled indices must be (S, L); got shape {labeled_idx.shape}.")
  if labeled_idx.shape[1] == 0:
    raise ValueError("Zero labeled points: the labeled index set is empty.")
  if not np.issubdtype(labeled_idx.dtype, np.integer):
    raise ValueError(f"labeled indices must be integers; got dtype {labeled_idx.dtype}.")
  if labeled_idx.min() < 0 or labeled_idx.max() >= num_train:
    raise ValueError(f"labeled indices must lie in [0, {num_train}); got range "
                     f"[{labeled_idx.min()}, {labeled_idx.max()}].")
  for s, row in enumerate(labeled_idx):
    if len(np.unique(row)) != len(row):
      raise ValueError(f"labeled indices of seed {s} contain duplicates.")
    if require_all_classes:
      missing = sorted(set(range(num_classes)) - set(labels[row].tolist()))
      if missing:
        raise ValueError(f"labeled set of seed {s} has no label for classes {missing}; the "
                         "protocol requires every class to be represented.")


def create_model(tc: TrainConfig, num_classes: int) -> nn.Module:
  return get_model(tc.model, num_classes=num_classes, depth=tc.depth, width=tc.width,
                   bn_momentum=tc.bn_momentum)


def lr_schedule(tc: TrainConfig) -> optax.Schedule:
  """Learning rate decayed linearly lr -> lr_end over the run."""
  return optax.linear_schedule(tc.lr, tc.lr_end, max(tc.steps - 1, 1))


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
  return optax.adam(lr_schedule(tc))


def init_state(tc: TrainConfig, model: nn.Module, key: jax.Array,
               input_shape: Sequence[int] = (32, 32, 1)) -> TrainState:
  """Fresh state from a typed PRNG key."""
  init_key, train_key = jax.random.split(key)
  variables = model.init(init_key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables["batch_stats"],
      opt_state=make_optimizer(tc).init(params),
      ema_params=jax.tree.map(jnp.copy, params),  # own buffers: the state is donated
      key=jax.random.key_data(train_key))


def _decay_kernels(params: Any, factor: jax.Array) -> Any:
  def f(path, p):
    return p * factor if getattr(path[-1], "key", None) == "kernel" else p
  return jax.tree_util.tree_map_with_path(f, params)


def make_step(tc: TrainConfig, model: nn.Module, num_classes: int,
              featurize_fn: FeaturizeFn,
              augment_featurize_fn: AugmentFeaturizeFn) -> Callable[..., tuple[TrainState, dict]]:
  """Returns step(state, data, labeled_idx (L,)) -> (state, metrics) for one model (un-jitted)."""
  optimizer = make_optimizer(tc)
  b, k_aug = tc.batch_size, tc.num_augmentations
  # augment_groups(keys, waveform_groups, noise): the function's batched `groups` form where it
  # has one (audio.augment_and_featurize), else one call per group; the draws are the same.
  augment_groups = getattr(augment_featurize_fn, "groups", None) or (
      lambda keys, groups, noise: [augment_featurize_fn(k, w, noise)
                                   for k, w in zip(keys, groups)])

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
      # One batched front end where the augmentation offers it (faster on CPU, same draws).
      x, u = map(norm, augment_groups([k_auglab, k_augunl], [data.waveforms[idx], waves_u],
                                      data.noise))
    elif tc.method == "supervised":
      x = norm(featurize_fn(data.waveforms[idx]))
    else:
      x = norm(augment_featurize_fn(k_auglab, data.waveforms[idx], data.noise))

    def forward(params, batch_stats, inputs):
      (logits, _), upd = model.apply({"params": params, "batch_stats": batch_stats}, inputs,
                                     train=True, mutable=["batch_stats"])
      return logits, upd["batch_stats"]

    if tc.method == "mixmatch":
      # Label guessing uses batch statistics of the guess batch; its stat updates are dropped.
      logits_u, _ = forward(state.params, state.batch_stats, u)
      q = mixmatch.guess_labels(logits_u.reshape(k_aug, b, num_classes), tc.temperature)
      inputs, targets = mixmatch.mixmatch_batch(k_mix, x, y, u, jnp.tile(q, (k_aug, 1)),
                                                tc.mixup_alpha)
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
def compiled_run_steps(tc: TrainConfig, model: nn.Module, num_classes: int,
                       featurize_fn: FeaturizeFn,
                       augment_featurize_fn: AugmentFeaturizeFn) -> Callable:
  """Cached jitted vmapped runner, so repeated trainings with equal settings compile once."""
  # One step function per setting that changes the step: runners that differ only in
  # seed_threads then share JAX's trace and compile caches.
  step = _cached_step(dataclasses.replace(tc, seed_threads=0), model, num_classes, featurize_fn,
                      augment_featurize_fn)
  return make_run_steps(step, seed_mode=resolve_seed_mode(tc.seed_mode),
                        seed_threads=tc.seed_threads)


@functools.lru_cache(maxsize=16)
def _cached_step(tc: TrainConfig, model: nn.Module, num_classes: int, featurize_fn: FeaturizeFn,
                 augment_featurize_fn: AugmentFeaturizeFn) -> Callable:
  return make_step(tc, model, num_classes, featurize_fn, augment_featurize_fn)


def resolve_seed_mode(mode: str) -> str:
  """"auto" -> "host" on the CPU backend, "vmap" elsewhere; other modes unchanged."""
  if mode == "auto":
    return "host" if jax.default_backend() == "cpu" else "vmap"
  return mode


def _host_steps(step_jit: Callable, state, data, labeled_idx, n: int):
  """n calls of a jitted step from Python; returns (state, mean metrics)."""
  acc = None
  for _ in range(n):
    state, m = step_jit(state, data, labeled_idx)
    acc = m if acc is None else jax.tree.map(jnp.add, acc, m)
  return state, jax.tree.map(lambda v: v / max(n, 1), acc)


def _vmap_host_run_steps(step: Callable) -> Callable:
  """run(state (S, ...), data, labeled_idx (S, L), num_steps): jitted vmapped step, host loop."""
  step_jit = jax.jit(jax.vmap(step, in_axes=(0, None, 0)), donate_argnums=0)
  return lambda state, data, labeled_idx, num_steps: _host_steps(
      step_jit, state, data, labeled_idx, int(num_steps))


def seed_thread_count(seed_threads: int, num_seeds: int) -> int:
  """Threads for the host loop: seed_threads, or min(S, CPU cores) when 0."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  wanted = seed_threads or (cores or 1)
  return max(1, min(wanted, num_seeds))


# JAX config entries that `with jax.<context>(...)` blocks set for their own thread only.
_THREAD_LOCAL_CONFIG = ("jax_default_matmul_precision", "jax_default_device", "jax_disable_jit",
                        "jax_enable_x64", "jax_numpy_rank_promotion", "jax_numpy_dtype_promotion",
                        "jax_debug_nans", "jax_debug_infs", "jax_default_prng_impl")


def _thread_config() -> tuple:
  return tuple(getattr(jax.config, name, None) for name in _THREAD_LOCAL_CONFIG)


def _config_reaches_threads() -> bool:
  """Whether a new thread traces with this thread's JAX config: False inside e.g.
  `with jax.default_matmul_precision(...)`, whose setting is thread-local."""
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(_thread_config).result() == _thread_config()


def _host_run_steps(step: Callable, seed_threads: int = 1) -> Callable:
  """run(state (S, ...), data, labeled_idx (S, L), num_steps): a jitted one-model step called
  from Python, seeds spread over `seed_thread_count` threads (JAX releases the GIL while XLA
  runs, so the seeds' steps overlap). Inside a thread-local JAX config context (e.g.
  `with jax.default_matmul_precision(...)`, which worker threads would not see) the seeds
  step one at a time in the calling thread instead, so they train under that context."""
  step_jit = jax.jit(step, donate_argnums=0)

  def run(state, data, labeled_idx, num_steps):
    num_seeds = labeled_idx.shape[0]
    one_seed = lambda s: _host_steps(step_jit, jax.tree.map(lambda v: v[s], state), data,
                                     labeled_idx[s], int(num_steps))
    workers = seed_thread_count(seed_threads, num_seeds)
    if workers > 1 and _config_reaches_threads():
      with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        per_seed = list(pool.map(one_seed, range(num_seeds)))
    else:
      per_seed = [one_seed(s) for s in range(num_seeds)]
    return jax.tree.map(lambda *v: jnp.stack(v), *per_seed)

  return run


def make_run_steps(step: Callable, seed_mode: str | None, seed_threads: int = 1) -> Callable:
  """(state, data, labeled_idx, num_steps) -> (state, mean metrics over the steps).

  With seed_mode "vmap", "map", "host" or "vmap_host" the state/labeled_idx carry a leading
  seed axis (data are shared); None runs a single unbatched model. "vmap", "map" and None make
  the whole chunk one jitted program with num_steps traced (a while loop), so chunks of any
  length share one compilation; "host" jits one step of one model, "vmap_host" one step of
  all S models, and both loop in Python (num_steps >= 1); "host" steps `seed_threads` seeds
  at a time (0: min(S, CPU cores)).
  """
  if seed_mode == "host":
    return _host_run_steps(step, seed_threads)
  if seed_mode == "vmap_host":
    return _vmap_host_run_steps(step)
  if seed_mode == "vmap":
    one = jax.vmap(step, in_axes=(0, None, 0))
  elif seed_mode == "map":
    def one(state, data, labeled_idx):
      return jax.lax.map(lambda a: step(a[0], data, a[1]), (state, labeled_idx))
  else:
    one = step

  def run(state, data, labeled_idx, num_steps):
    _, metrics_shape = jax.eval_shape(one, state, data, labeled_idx)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape)

    def body(_, carry):
      st, acc = carry
      st, m = one(st, data, labeled_idx)
      return st, jax.tree.map(jnp.add, acc, m)

    state, total = jax.lax.fori_loop(0, num_steps, body, (state, zeros))
    n = jnp.maximum(num_steps, 1).astype(jnp.float32)
    return state, jax.tree.map(lambda v: v / n, total)

  return jax.jit(run, donate_argnums=0)


def feature_stats(featurize_fn: FeaturizeFn, waveforms: np.ndarray, max_clips: int = 512,
                  batch: int = 128) -> tuple[float, float]:
  """Scalar mean and std of un-augmented log-mel features over the first max_clips clips."""
  feats = [np.asarray(jax.jit(featurize_fn)(jnp.asarray(waveforms[i:i + batch])))
           for i in range(0, min(len(waveforms), max_clips), batch)]
  f = np.concatenate(feats)
  return float(f.mean()), float(f.std() + 1e-6)


def default_audio() -> tuple[FeaturizeFn, AugmentFeaturizeFn]:
  """(featurize, augment_and_featurize) of bilevel_jax.audio: what train_many uses by default."""
  from bilevel_jax import audio  # pylint: disable=g-import-not-at-top
  return audio.featurize, audio.augment_and_featurize


def _checkpoint_manager(workdir: pathlib.Path | None):
  if workdir is None:
    return None
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
  return ocp.CheckpointManager((pathlib.Path(workdir) / "checkpoints").absolute(),
                               options=options)


def train_many(config: Any, waveforms: np.ndarray, labels: np.ndarray,
               labeled_idx: np.ndarray, keys: jax.Array, *, num_classes: int,
               noise: np.ndarray | None = None, featurize_fn: FeaturizeFn | None = None,
               augment_featurize_fn: AugmentFeaturizeFn | None = None,
               workdir: str | pathlib.Path | None = None, require_all_classes: bool = False,
               vmapped: bool = True, progress: bool = True,
               callback: Callable[[int, TrainState], None] | None = None) -> TrainResult:
  """Trains S models (one per key / labeled set) in one compiled program.

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
    vmapped: if False the S models are trained one after another (benchmark baseline).
    callback: called as callback(step, state) after every logged chunk (tests use it to kill).

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
    raise ValueError(f"need one key per labeled set: keys {jnp.shape(keys)}, labeled "
                     f"{labeled_idx.shape}.")
  if featurize_fn is None or augment_featurize_fn is None:
    default_feat, default_aug = default_audio()
    featurize_fn = featurize_fn or default_feat
    augment_featurize_fn = augment_featurize_fn or default_aug
  if noise is None:
    noise = np.zeros((1, waveforms.shape[1]), np.float32)
  if not vmapped:
    results = []
    for s in range(num_seeds):
      sub = None if workdir is None else pathlib.Path(workdir) / f"seed{s}"
      results.append(train_many(tc, waveforms, labels, labeled_idx[s:s + 1], keys[s:s + 1],
                                num_classes=num_classes, noise=noise, featurize_fn=featurize_fn,
                                augment_featurize_fn=augment_featurize_fn, workdir=sub,
                                require_all_classes=require_all_classes, progress=progress,
                                callback=callback))
    state = jax.tree.map(lambda *xs: jnp.concatenate(xs), *[r.state for r in results])
    seconds = sum(r.seconds for r in results)
    return TrainResult(state, sum((r.classifiers for r in results), []),
                       results[0].history, seconds,
                       float(np.mean([r.steps_per_second for r in results])),
                       float(np.mean([r.cpu_seconds_per_step for r in results])))

  model = create_model(tc, num_classes)
  mean, std = feature_stats(featurize_fn, waveforms)
  data = TrainData(jnp.asarray(waveforms), jnp.asarray(labels, jnp.int32),
                   jnp.asarray(noise, jnp.float32), jnp.float32(mean), jnp.float32(std))
  input_shape = jax.eval_shape(featurize_fn, jax.ShapeDtypeStruct((1, waveforms.shape[1]),
                                                                 jnp.float32)).shape[1:]
  state = jax.vmap(lambda k: init_state(tc, model, k, input_shape))(keys)
  lab = jnp.asarray(labeled_idx, jnp.int32)
  run_steps = compiled_run_steps(tc, model, num_classes, featurize_fn, augment_featurize_fn)

  manager = _checkpoint_manager(workdir)
  writer = None
  if manager is not None:
    from bilevel_jax.utils.metrics import MetricWriter  # pylint: disable=g-import-not-at-top
    writer = MetricWriter(workdir)
    latest = manager.latest_step()
    if latest is not None:
      import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
      state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
  start = int(np.asarray(state.step)[0])

  history, t0, t_after_first, steps_after_first = [], time.perf_counter(), None, 0
  cpu_after_first = None
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=tc.steps, initial=start, desc=f"{tc.method} x{num_seeds}", leave=False)
  step = start
  while step < tc.steps:
    n = min(tc.log_every, tc.steps - step)
    state, metrics = run_steps(state, data, lab, jnp.int32(n))
    metrics = jax.device_get(metrics)  # one host sync per chunk
    step += n
    if t_after_first is None:
      t_after_first, cpu_after_first = time.perf_counter(), time.process_time()
    else:
      steps_after_first += n
    row = {f"train/{k}": float(np.mean(v)) for k, v in metrics.items()}
    history.append({"step": step, **row})
    if writer is not None:
      writer.write_scalars(step, row)
    if bar is not None:
      bar.update(n)
      bar.set_postfix(loss=f"{row['train/loss']:.3f}")
    if manager is not None and (step % tc.checkpoint_every == 0 or step == tc.steps):
      import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
      manager.save(step, args=ocp.args.StandardSave(state))
      manager.wait_until_finished()
    if callback is not None:
      callback(step, state)
  jax.block_until_ready(state)
  t1, cpu1 = time.perf_counter(), time.process_time()
  if bar is not None:
    bar.close()
  if writer is not None:
    writer.close()
  if manager is not None:
    manager.close()
  sps = steps_after_first / (t1 - t_after_first) if steps_after_first else float("nan")
  cps = (cpu1 - cpu_after_first) / steps_after_first if steps_after_first else float("nan")
  noise_dev = data.noise
  classifiers = [
      Classifier(model, {"params": jax.tree.map(lambda v: v[s], state.ema_params),
                         "batch_stats": jax.tree.map(lambda v: v[s], state.batch_stats)},
                 mean, std, featurize_fn, augment_featurize_fn, noise_dev)
      for s in range(num_seeds)]
  return TrainResult(state, classifiers, history, t1 - t0, sps, cps)


def train(config: Any, waveforms: np.ndarray, labels: np.ndarray, labeled_idx: np.ndarray,
          key: jax.Array, **kwargs: Any) -> TrainResult:
  """One model: labeled_idx (L,), key a typed PRNG key. Same keywords as `train_many`."""
  labeled_idx = np.asarray(labeled_idx)
  if labeled_idx.ndim != 1:
    raise ValueError(f"train() takes labeled indices of shape (L,); got {labeled_idx.shape}.")
  return train_many(config, waveforms, labels, labeled_idx[None], key[None], **kwargs)
