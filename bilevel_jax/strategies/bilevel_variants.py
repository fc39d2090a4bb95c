"""Variants of the bilevel rule that go beyond the paper (issue 14, experiments (d), (e), (f)).

`bilevel` (strategies/bilevel.py) stays the paper's algorithm. Each variant here has its own
name, config block (experiments/configs/fsdd.py) and docstring saying what differs:

* `bilevel_tempered` (f): the paper's rule with pseudo-labels y~ sharpened or softened by a
  temperature T before G, the picks' inner labels and the scores.
* `bilevel_embed` (d): the paper's rule and solver, with the trained SSL network's own
  standardized penultimate embeddings as the proxy features instead of NTK Nystrom features.
* `bilevel_ssl` (e): the paper's features and solver, with an inner problem that also fits the
  confident pseudo-labeled pool (`bilevel_jax.bilevel.semi_supervised`).

All three take `pseudo_temperature` (default 1: the model's predictions, as in the paper).
`bilevel_tempered` and `bilevel_embed` call the registered `bilevel` strategy itself and take
every keyword option it has (their signatures are built from its own), so they share its solver
and options, including any added to `bilevel` later.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp

from bilevel_jax.bilevel import select as bilevel_select
from bilevel_jax.bilevel import semi_supervised
from bilevel_jax.strategies import base
from bilevel_jax.strategies import bilevel as paper
from bilevel_jax.strategies import inputs

# Augmented views per point in bilevel_embed's inner problem (the loop makes this many
# augmented predictions and embeddings, as for the consistency baseline's 5).
EMBED_AUGMENTATIONS = 4


def tempered(probs: jax.Array, temperature: float) -> jax.Array:
  """Rows of probs (N, C) raised to 1/T and renormalised: T < 1 sharpens, T > 1 softens,
  T = 1 returns probs unchanged. Zero entries stay zero."""
  if temperature == 1.0:
    return probs
  logp = jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny))
  out = jax.nn.softmax(logp / temperature, axis=-1)
  return jnp.where(probs > 0, out, 0.0) / jnp.sum(jnp.where(probs > 0, out, 0.0), -1, keepdims=True)


def _check_temperature(name: str, block: Any) -> None:
  t = block.get("pseudo_temperature", 1.0) if block is not None else 1.0
  if not (isinstance(t, (int, float)) and 0 < t < float("inf")):
    raise ValueError(
      f"config.{name}.pseudo_temperature={t!r}; expected a number > 0 "
      "(1 = the model's predictions, as in the paper)."
    )


def _kernel_prepare(name: str):
  """prepare hook: the paper's NTK features and banks from the variant's own block."""

  def prepare(block: Any, data: Any, *, progress: bool = False) -> inputs.Prepared:
    prepared = paper.prepare(block, data, progress=progress)
    # Only the variant's own options: bilevel_ssl has no solver / loss_reduction options, and
    # jit would take a string it does not know as a traced array.
    own = base.get(name).options
    options = {k: v for k, v in prepared.options.items() if k in own}
    options.update(paper.block_options(name, block))
    return prepared._replace(options=options)

  return prepare


def _kernel_check(name: str):
  def check(block: Any) -> None:
    paper.check_config(block)
    _check_temperature(name, block)
    if name == "bilevel_ssl":
      # Its own greedy loop (bilevel/semi_supervised.py) has the paper's Adam + CG solver and
      # the mean convention only; refuse a block that asks for more rather than ignore it.
      if block.get("solver", "paper") != "paper" or block.get("loss_reduction", "mean") != "mean":
        raise ValueError(
          f"config.bilevel_ssl asks for solver={block.get('solver')!r}, "
          f"loss_reduction={block.get('loss_reduction')!r}; bilevel_ssl supports "
          "only solver='paper' with loss_reduction='mean' so far."
        )
      if not 0.0 <= float(block.ssl_threshold) <= 1.0:
        raise ValueError(
          f"config.bilevel_ssl.ssl_threshold={block.ssl_threshold}; expected a "
          "probability in [0, 1]."
        )
      if not float(block.ssl_weight) >= 0.0:
        raise ValueError(f"config.bilevel_ssl.ssl_weight={block.ssl_weight}; expected >= 0.")

  return check


def _with_paper_options(drop: tuple[str, ...] = (), **extra: Any):
  """Gives `fn(key, ctx, b, **options)` the keyword options of the registered `bilevel`
  strategy (minus `drop`) plus `extra` {name: default} as its signature, so a variant that
  calls `bilevel` takes every option `bilevel` has (e.g. a solver choice) without listing it,
  and `base.register` treats them as it treats `bilevel`'s (floats traced, the rest static,
  `_STATIC_FLOATS` kept static). `fn` receives only the options
  passed; `bilevel` applies its own defaults."""

  def decorator(fn):
    params = [p for p in inspect.signature(paper.bilevel).parameters.values() if p.name not in drop]
    params += [
      inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in extra.items()
    ]
    fn.__signature__ = inspect.Signature(params)
    return fn

  return decorator


# Float options that stay static: uniform_fraction decides the number of greedy picks, and
# `tempered` skips T = 1 exactly (the paper's pseudo-labels, bit for bit).
_STATIC_FLOATS = ("uniform_fraction", "pseudo_temperature")


@base.register(
  "bilevel_tempered",
  kernel=True,
  diagnostics=True,
  config_block="bilevel_tempered",
  prepare=_kernel_prepare("bilevel_tempered"),
  check_config=_kernel_check("bilevel_tempered"),
  static_options=_STATIC_FLOATS,
)
@_with_paper_options(pseudo_temperature=1.0)
def bilevel_tempered(
  key: jax.Array, ctx: base.RoundContext, b: int, **options: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Variant (f): `bilevel` on pseudo-labels y~ = tempered(ctx.probs, pseudo_temperature).

  Differs from the paper only in y~ (the targets of G on the pool, the labels picked points
  bring into the inner problem, and the p_x - y~_x of the scores); T = 1 is `bilevel` exactly.
  Same inputs, options (all of `bilevel`'s, plus pseudo_temperature) and diagnostics.
  """
  temperature = options.pop("pseudo_temperature", 1.0)
  ctx = ctx._replace(probs=tempered(ctx.probs, temperature))
  return base.get("bilevel").select_with_diagnostics(key, ctx, b, **options)


def standardize(embeddings: jax.Array, *others: jax.Array) -> tuple[jax.Array, ...]:
  """Per-dimension (x - mean) / std with the mean and std of `embeddings` (N, E) over its
  rows, applied to it and to `others` (..., E); constant dimensions are only centred."""
  mean = jnp.mean(embeddings, axis=0)
  std = jnp.std(embeddings, axis=0)
  std = jnp.where(std > 0, std, 1.0)
  return tuple((x - mean) / std for x in (embeddings,) + others)


def embedding_inputs(
  embeddings: jax.Array, aug_embeddings: jax.Array, labeled_idx: jax.Array, augmentations: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """bilevel_embed's proxy inputs: features (N, E), labeled bank (L, A, E) and the pool bank
  (N, A, E) of the first A augmented views, all standardized with the clean embeddings'
  statistics (embeddings (N, E), aug_embeddings (K, N, E), K >= A)."""
  z, aug = standardize(embeddings, aug_embeddings[:augmentations])
  pool_bank = jnp.swapaxes(aug, 0, 1)  # (N, A, E)
  return z, pool_bank[labeled_idx], pool_bank


def _embed_check(block: Any) -> None:
  _check_temperature("bilevel_embed", block)
  a = int(block.augmentations)
  if not 1 <= a <= EMBED_AUGMENTATIONS:
    raise ValueError(
      f"config.bilevel_embed.augmentations={a}; expected 1 to "
      f"{EMBED_AUGMENTATIONS} (augmented views the loop computes)."
    )


def _embed_prepare(block: Any, data: Any, *, progress: bool = False) -> inputs.Prepared:
  del data, progress  # the inputs come from the round's model (ctx.embeddings)
  return inputs.Prepared(paper.block_options("bilevel_embed", block))


@base.register(
  "bilevel_embed",
  augmentations=EMBED_AUGMENTATIONS,
  embeddings=True,
  diagnostics=True,
  config_block="bilevel_embed",
  prepare=_embed_prepare,
  check_config=_embed_check,
  static_options=_STATIC_FLOATS,
)
@_with_paper_options(drop=("bank_fn",), augmentations=EMBED_AUGMENTATIONS, pseudo_temperature=1.0)
def bilevel_embed(
  key: jax.Array, ctx: base.RoundContext, b: int, **options: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Variant (d): `bilevel` with the SSL network's embeddings as the proxy's features.

  Differs from the paper only in the features of the linear proxy h_w(z) = softmax(w^T z):
  z_x is the round model's penultimate embedding of clip x (ctx.embeddings, the input of its
  dense head, the space k-center works in), standardized per dimension over the training set,
  i.e. an exact linear kernel on them instead of the infinite-width NTK. The A = augmentations
  (<= EMBED_AUGMENTATIONS) copies of a labeled or picked point are the model's embeddings of A
  augmented log-mels (ctx.aug_embeddings, the same draws as the aug_probs of the consistency
  baseline), made once per round. Greedy rule, solver, G, scores, uniform share, options (all
  of `bilevel`'s but bank_fn, plus augmentations and pseudo_temperature) and diagnostics:
  `bilevel`'s.
  """
  augmentations = options.pop("augmentations", EMBED_AUGMENTATIONS)
  temperature = options.pop("pseudo_temperature", 1.0)
  z, labeled_bank, pool_bank = embedding_inputs(
    ctx.embeddings, ctx.aug_embeddings, ctx.labeled_idx, augmentations
  )
  bank_fn, bank_params = bilevel_select.precomputed_bank(pool_bank)
  ctx = ctx._replace(
    probs=tempered(ctx.probs, temperature), features=z, bank=labeled_bank, bank_params=bank_params
  )
  return base.get("bilevel").select_with_diagnostics(key, ctx, b, bank_fn=bank_fn, **options)


# The exact solver's settings and the loss convention, which bilevel_ssl's greedy loop lacks.
_SSL_DROP = (
  "solver",
  "loss_reduction",
  "inner_tol",
  "ihvp_rtol",
  "inner_max_iter",
  "ihvp_max_iter",
  "newton_cg_max_iter",
)


@base.register(
  "bilevel_ssl",
  kernel=True,
  diagnostics=True,
  config_block="bilevel_ssl",
  prepare=_kernel_prepare("bilevel_ssl"),
  check_config=_kernel_check("bilevel_ssl"),
  static_options=_STATIC_FLOATS,
)
@_with_paper_options(drop=_SSL_DROP, ssl_threshold=0.9, ssl_weight=0.5, pseudo_temperature=1.0)
def bilevel_ssl(
  key: jax.Array, ctx: base.RoundContext, b: int, **options: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Variant (e): a semi-supervised proxy; the inner problem also fits the confident pool.

  Differs from the paper only in the inner objective F: besides the labeled points and the
  picks it fits every other pool point whose max predicted probability (ctx.probs, before
  any temperature) is >= ssl_threshold, with its clean NTK features and soft pseudo-label,
  the confident set weighing ssl_weight times the labeled set
  (`bilevel_jax.bilevel.semi_supervised`; ssl_weight = 0 is `bilevel`). Features, banks, G,
  scores, Adam + CG solver and uniform share as in `bilevel`. Diagnostics: `bilevel`'s
  (proxy_logits included) plus `num_confident` (|Q| at the start of the selection, repeated
  per pick). Options: `bilevel`'s but the exact solver's and loss_reduction (mean only), plus
  ssl_threshold, ssl_weight and pseudo_temperature.
  """
  bank_fn = options.pop("bank_fn", None)
  pseudo_temperature = options.pop("pseudo_temperature", 1.0)
  labeled_labels = ctx.labels[ctx.labeled_idx]
  if ctx.bank is None or bank_fn is None:
    raise ValueError(
      "bilevel_ssl needs RoundContext.bank (L, A, m) and a bank_fn option (its "
      "prepare hook provides both)."
    )
  selection, n_conf = semi_supervised.select_batch_ssl(
    key,
    ctx.features,
    tempered(ctx.probs, pseudo_temperature).astype(ctx.features.dtype),
    jnp.max(ctx.probs, axis=-1),
    ctx.labeled_idx,
    labeled_labels,
    ctx.bank,
    bank_fn,
    ctx.bank_params,
    b=b,
    threshold=options.pop("ssl_threshold", 0.9),
    **options,
  )
  diagnostics = {
    "score": selection.scores,
    "inner_loss": selection.inner_loss,
    "outer_loss": selection.outer_loss,
    "cg_residual": selection.cg_residual,
    "num_confident": jnp.full(selection.scores.shape, n_conf, jnp.float32),
    # The proxy of the last inner solve (N, C), for the loop's pick diagnostics.
    "proxy_logits": ctx.features @ selection.w,
  }
  return selection.indices.astype(jnp.int32), diagnostics
