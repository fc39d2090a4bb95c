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

`register` jit-compiles the function and records what it needs from the loop. `b` and the
options are static, except float options (`lr`, `l2`, tolerances...: keyword-only parameters
with a float default), which are traced, so changing them reuses the compiled program; a
float option that decides shapes (e.g. bilevel's `uniform_fraction`) is named in
`register(static_options=...)`. What the strategy needs from the loop: predictions under
`augmentations` random augmentations, last-layer `embeddings`, or Nystrom `kernel` features for
the bilevel rule. A strategy registered with
`diagnostics=True` returns `(indices, {name: array})` instead; `select` still gives the indices
and `select_with_diagnostics` both (the AL loop records them with each round).

A strategy that needs inputs of its own (e.g. the bilevel rule's Nystrom features and
augmented-copy banks) builds them in a `prepare` hook from its config block (`config_block`);
see `strategies.inputs`, which the AL loop calls without knowing strategy names.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from bilevel_jax.strategies import checks as strategy_checks


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
    aug_embeddings: (K, N, E) last-layer embeddings under the K augmentations of aug_probs
      (for strategies registered with both `augmentations` and `embeddings`), or None.
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
  aug_embeddings: jax.Array | None = None


class Strategy(NamedTuple):
  """A registered strategy: its jitted `select` and what it needs from the loop."""

  name: str
  select: Callable[..., jax.Array]
  augmentations: int = 0
  embeddings: bool = False
  kernel: bool = False
  # Jitted fn returning (indices, {name: array}) for strategies registered with diagnostics.
  select_with_diagnostics: Callable[..., tuple[jax.Array, dict]] | None = None
  options: tuple[str, ...] = ()  # keyword-only option names of the strategy function
  config_block: str | None = None  # config entry holding its options and input settings
  prepare: Callable[..., Any] | None = None  # (block, data, *, progress) -> inputs.Prepared
  check_config: Callable[[Any], None] | None = None  # (block) -> None, raises ValueError
  # Float options traced under jit (changing them does not recompile).
  traced_options: tuple[str, ...] = ()


_REGISTRY: dict[str, Strategy] = {}


def register(
  name: str,
  *,
  augmentations: int = 0,
  embeddings: bool = False,
  kernel: bool = False,
  diagnostics: bool = False,
  overwrite: bool = True,
  config_block: str | None = None,
  prepare: Callable[..., Any] | None = None,
  check_config: Callable[[Any], None] | None = None,
  static_options: tuple[str, ...] = (),
) -> Callable[[Callable], Callable]:
  """Decorator registering `fn(key, ctx, b, *, **options) -> (b,) int32` under `name`.

  Keyword-only parameters of `fn` are options, passed through `select(..., **options)`. Those
  with a float default are traced (any value, one compilation; `select` checks that they are
  finite numbers); the others are static under jit (hashable values such as ints, strings,
  module-level functions), as are the float options named in `static_options`.

  Args:
    name: registry key (used by `--config.strategy`).
    augmentations: number K of augmented predictions the strategy reads from `ctx.aug_probs`.
    embeddings: whether it reads `ctx.embeddings`.
    kernel: whether it reads `ctx.features` / `ctx.bank` (Nystrom features).
    diagnostics: `fn` returns (indices, {name: array}) (e.g. per-pick solver residuals).
    static_options: float options that must stay static (they decide shapes or loop lengths).
    overwrite: re-registering a name replaces it (convenient when editing a notebook cell).
    config_block: name of the experiment config's block with this strategy's settings; its
      entries named like options are passed as options (`strategies.inputs.prepare`).
    prepare: `prepare(block, data, *, progress) -> inputs.Prepared`, building the strategy's
      own inputs once per experiment (e.g. Nystrom features); None: options from the block only.
    check_config: `check_config(block)` raising ValueError, run before any data is loaded.

  Returns:
    The decorator; it returns the jitted function, which gives the (b,) indices only, also for
    a strategy registered with diagnostics=True (`get(name).select_with_diagnostics` or
    `select_with_diagnostics(name, ...)` return both).
  """
  if not name or not isinstance(name, str):
    raise ValueError(f"Strategy name must be a non-empty string, got {name!r}.")

  def decorator(fn: Callable) -> Callable:
    if name in _REGISTRY and not overwrite:
      raise ValueError(f"Strategy {name!r} is already registered.")
    options = tuple(
      p.name
      for p in inspect.signature(fn).parameters.values()
      if p.kind == inspect.Parameter.KEYWORD_ONLY
    )
    static, traced = _split_options(name, fn, static_options)
    jit = functools.partial(jax.jit, static_argnums=(2,), static_argnames=("b", *static))

    @functools.wraps(fn)  # keeps fn's signature, so the option names stay static
    def checked(*args, **kwargs):
      return strategy_checks.check_output(name, diagnostics, fn(*args, **kwargs))

    with_diagnostics = None
    if diagnostics:
      with_diagnostics = jit(checked)

      @functools.wraps(fn)
      def indices_only(*args, **kwargs):
        return checked(*args, **kwargs)[0]

      jitted = jit(indices_only)
    else:
      jitted = jit(checked)
    _REGISTRY[name] = Strategy(
      name,
      jitted,
      augmentations,
      embeddings,
      kernel,
      with_diagnostics,
      options,
      config_block,
      prepare,
      check_config,
      traced,
    )
    return jitted

  return decorator


def _split_options(
  name: str, fn: Callable, static_options: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(static, traced) keyword-only option names of `fn`: float defaults are traced."""
  params = [
    p for p in inspect.signature(fn).parameters.values() if p.kind == inspect.Parameter.KEYWORD_ONLY
  ]
  unknown = set(static_options) - {p.name for p in params}
  if unknown:
    raise ValueError(
      f"Strategy {name!r}: static_options {sorted(unknown)} are not keyword-only "
      "parameters of the function."
    )
  traced = tuple(
    p.name for p in params if isinstance(p.default, float) and p.name not in static_options
  )
  return tuple(p.name for p in params if p.name not in traced), traced


def available() -> tuple[str, ...]:
  """Names of all registered strategies, sorted."""
  return tuple(sorted(_REGISTRY))


def get(name: str) -> Strategy:
  """Looks a strategy up by name, with a clear error listing the known ones."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown strategy {name!r}; registered strategies: {list(available())}.")
  return _REGISTRY[name]


def select(name: str, key: jax.Array, ctx: RoundContext, b: int, **options: Any) -> jax.Array:
  """Runs strategy `name` on one (unbatched) context: (b,) int32 distinct pool indices.

  The inputs are checked before the strategy runs and its picks after (`strategies.checks`:
  shape (b,), in [0, N), distinct, unlabeled), so a faulty custom strategy fails here, naming
  itself, instead of corrupting the labeled set.
  """
  return _run(name, key, ctx, b, options, want_diagnostics=False)[0]


def select_with_diagnostics(
  name: str, key: jax.Array, ctx: RoundContext, b: int, **options: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`select`, plus the strategy's diagnostics ({} for strategies without them)."""
  return _run(name, key, ctx, b, options, want_diagnostics=True)


def _run(
  name: str,
  key: jax.Array,
  ctx: RoundContext,
  b: int,
  options: dict[str, Any],
  want_diagnostics: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  strategy = get(name)
  strategy_checks.check_context(strategy, ctx)
  strategy_checks.check_traced_options(strategy, options)
  num_pool = ctx.labeled_mask.shape[-1] - ctx.labeled_idx.shape[-1]
  if not 0 < b <= num_pool:
    raise ValueError(f"Batch size b={b} must be in [1, pool size {num_pool}].")
  diagnostics = {}
  if want_diagnostics and strategy.select_with_diagnostics is not None:
    picks, diagnostics = strategy.select_with_diagnostics(key, ctx, b, **options)
  else:
    picks = strategy.select(key, ctx, b, **options)
  strategy_checks.check_picks(strategy.name, picks, ctx.labeled_mask, b)
  return picks, diagnostics


# Helpers shared by strategies (all jit-friendly, no loops over pool points).


def top_b_in_pool(scores: jax.Array, labeled_mask: jax.Array, b: int) -> jax.Array:
  """Indices of the b largest `scores` (N,) among unlabeled points; ties -> lower index."""
  chex.assert_equal_shape([scores, labeled_mask])
  # NaN scores would win top_k and -inf ones (also float64 scores below the float32 range)
  # would tie with labeled points, which may then come first: both become the worst finite
  # pool value, so every pool point ranks above every labeled one.
  worst = jnp.finfo(jnp.float32).min
  scores = jnp.nan_to_num(scores.astype(jnp.float32), nan=worst, posinf=jnp.inf, neginf=worst)
  masked = jnp.where(labeled_mask, -jnp.inf, scores)
  return jax.lax.top_k(masked, b)[1].astype(jnp.int32)


def uniform_in_pool(
  key: jax.Array, labeled_mask: jax.Array, b: int, exclude: jax.Array | None = None
) -> jax.Array:
  """b distinct unlabeled indices uniformly at random (Gumbel top-k), avoiding `exclude` (k,)."""
  blocked = labeled_mask
  if exclude is not None:
    blocked = blocked.at[exclude].set(True)
  return top_b_in_pool(jax.random.uniform(key, labeled_mask.shape), blocked, b)


def entropy(probs: jax.Array, axis: int = -1) -> jax.Array:
  """Shannon entropy in nats of (..., C) probabilities (0 log 0 = 0)."""
  p = jnp.clip(probs, 0.0, 1.0)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=axis)
