"""One interface for every batch-selection strategy, and a registry by name.

A strategy is a pure function `select(key, ctx, b, **options) -> (b,) int32` that receives the
trained model's outputs on the whole training set (`RoundContext`) and returns `b` distinct
indices into the training set, none of them labeled. Indices refer to rows of the training
set (N rows); the pool is the training set minus the labeled points.

A new strategy takes a few lines (e.g. in a notebook):

  @strategies.register("margin")
  def margin(key, ctx, b):
    top2 = jax.lax.top_k(ctx.probs, 2)[0]
    return strategies.top_b_in_pool(top2[:, 1] - top2[:, 0], ctx.labeled_mask, b)

`register` jit-compiles the function (`b` and the options are static) and records what it
needs from the loop: predictions under `augmentations` random augmentations, last-layer
`embeddings`, or Nystrom `kernel` features for the bilevel rule.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp


class RoundContext(NamedTuple):
  """What the loop hands a strategy after training the model of one round.

  Attributes:
    probs: (N, C) float soft predictions (no augmentation) on the training set.
    labeled_mask: (N,) bool, True for labeled points.
    labeled_idx: (L,) int32 indices of the labeled points (in labeling order).
    labels: (N,) int32 true labels of labeled points, -1 on the pool (strategies never see pool
      labels).
    aug_probs: (K, N, C) predictions under K independent augmentations, or None.
    embeddings: (N, E) last-layer embeddings, or None.
    features: (N, m) Nystrom features of the unaugmented points, or None.
    bank: (L, A, m) Nystrom features of A augmented copies of each labeled point (rows aligned
      with labeled_idx), or None.
    bank_params: pytree of arrays read by the bilevel `bank_fn` option to make the copies of a
      newly picked point (see bilevel_jax.bilevel.select), or None.
  """
  probs: jax.Array
  labeled_mask: jax.Array
  labeled_idx: jax.Array
  labels: jax.Array
  aug_probs: jax.Array | None = None
  embeddings: jax.Array | None = None
  features: jax.Array | None = None
  bank: jax.Array | None = None
  bank_params: Any = None


class Strategy(NamedTuple):
  """A registered strategy: its jitted `select` and what it needs from the loop."""
  name: str
  select: Callable[..., jax.Array]
  augmentations: int = 0
  embeddings: bool = False
  kernel: bool = False


_REGISTRY: dict[str, Strategy] = {}


def register(name: str, *, augmentations: int = 0, embeddings: bool = False,
             kernel: bool = False, overwrite: bool = True) -> Callable[[Callable], Callable]:
  """Decorator registering `fn(key, ctx, b, *, **options) -> (b,) int32` under `name`.

  Keyword-only parameters of `fn` are options: static under jit (hashable values such as
  numbers, strings, module-level functions), passed through `select(..., **options)`.

  Args:
    name: registry key (used by `--config.strategy`).
    augmentations: number K of augmented predictions the strategy reads from `ctx.aug_probs`.
    embeddings: whether it reads `ctx.embeddings`.
    kernel: whether it reads `ctx.features` / `ctx.bank` (Nystrom features).
    overwrite: re-registering a name replaces it (convenient when editing a notebook cell).

  Returns:
    The decorator; it returns the jitted function.
  """
  if not name or not isinstance(name, str):
    raise ValueError(f"Strategy name must be a non-empty string, got {name!r}.")

  def decorator(fn: Callable) -> Callable:
    if name in _REGISTRY and not overwrite:
      raise ValueError(f"Strategy {name!r} is already registered.")
    options = [p.name for p in inspect.signature(fn).parameters.values()
               if p.kind == inspect.Parameter.KEYWORD_ONLY]
    jitted = jax.jit(fn, static_argnums=(2,), static_argnames=("b", *options))
    _REGISTRY[name] = Strategy(name, jitted, augmentations, embeddings, kernel)
    return jitted

  return decorator


def available() -> tuple[str, ...]:
  """Names of all registered strategies, sorted."""
  return tuple(sorted(_REGISTRY))


def get(name: str) -> Strategy:
  """Looks a strategy up by name, with a clear error listing the known ones."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown strategy {name!r}; registered strategies: {list(available())}.")
  return _REGISTRY[name]


def select(name: str, key: jax.Array, ctx: RoundContext, b: int, **options: Any) -> jax.Array:
  """Runs strategy `name`: returns (b,) int32 distinct unlabeled training-set indices."""
  strategy = get(name)
  num_pool = ctx.labeled_mask.shape[-1] - ctx.labeled_idx.shape[-1]
  if not 0 < b <= num_pool:
    raise ValueError(f"Batch size b={b} must be in [1, pool size {num_pool}].")
  _check_context(strategy, ctx)
  return strategy.select(key, ctx, b, **options)


def _check_context(strategy: Strategy, ctx: RoundContext) -> None:
  n, _ = ctx.probs.shape[-2:]
  chex.assert_shape(ctx.labeled_mask, ctx.probs.shape[:-2] + (n,))
  chex.assert_equal_shape([ctx.labeled_mask, ctx.labels])
  missing = []
  if strategy.augmentations:
    if ctx.aug_probs is None or ctx.aug_probs.shape[-3] < strategy.augmentations:
      missing.append(f"aug_probs with K >= {strategy.augmentations} augmentations")
  if strategy.embeddings and ctx.embeddings is None:
    missing.append("embeddings")
  if strategy.kernel and ctx.features is None:
    missing.append("features (Nystrom)")
  if missing:
    raise ValueError(f"Strategy {strategy.name!r} needs {', '.join(missing)} in the RoundContext.")


# Helpers shared by strategies (all jit-friendly, no loops over pool points).

def top_b_in_pool(scores: jax.Array, labeled_mask: jax.Array, b: int) -> jax.Array:
  """Indices of the b largest `scores` (N,) among unlabeled points; ties -> lower index."""
  chex.assert_equal_shape([scores, labeled_mask])
  masked = jnp.where(labeled_mask, -jnp.inf, scores.astype(jnp.float32))
  # NaN scores would win top_k; treat them as the worst pool value instead.
  masked = jnp.where(jnp.isnan(masked), jnp.finfo(jnp.float32).min, masked)
  return jax.lax.top_k(masked, b)[1].astype(jnp.int32)


def uniform_in_pool(key: jax.Array, labeled_mask: jax.Array, b: int,
                    exclude: jax.Array | None = None) -> jax.Array:
  """b distinct unlabeled indices uniformly at random (Gumbel top-k), avoiding `exclude` (k,)."""
  blocked = labeled_mask
  if exclude is not None:
    blocked = blocked.at[exclude].set(True)
  return top_b_in_pool(jax.random.uniform(key, labeled_mask.shape), blocked, b)


def entropy(probs: jax.Array, axis: int = -1) -> jax.Array:
  """Shannon entropy in nats of (..., C) probabilities (0 log 0 = 0)."""
  p = jnp.clip(probs, 0.0, 1.0)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=axis)

