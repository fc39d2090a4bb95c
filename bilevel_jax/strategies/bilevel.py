"""The paper's strategy: greedy bilevel selection (90%) plus a uniform share (10%).

Delegates to `bilevel_jax.bilevel.select.select_batch`; pseudo-labels are the model's soft
predictions `ctx.probs` on the whole training set and the proxy features are `ctx.features`.
Its inputs (WRN NTK Nystrom features of the training set, augmented-copy banks and the in-jit
bank function) are built by `prepare` from the config's `bilevel` block with
`bilevel_jax.ntk.features`; the block's entries named like the options below are the options,
and its `inner_batch_size` is the option `batch_size` (`block_options`): the keyword keeps the
name of `select_batch`'s, which callers and recorded pick-statistics variants use.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp

from bilevel_jax.bilevel import select as bilevel_select
from bilevel_jax.bilevel import settings as settings_lib
from bilevel_jax.strategies import base
from bilevel_jax.strategies import inputs


def clean_copy_bank_fn(features: jax.Array, key: jax.Array, index: jax.Array) -> jax.Array:
  """Bank function without augmentation: one copy, the clean features. Returns (1, m)."""
  del key
  return features[index][None]


def check_config(block: Any) -> None:
  """The feature entries of the `bilevel` block (landmarks, kernel, ...), before any data."""
  from bilevel_jax.ntk import features  # pylint: disable=g-import-not-at-top

  features.check_config(block)


def block_options(name: str, block: Any) -> dict[str, Any]:
  """Keyword options of strategy `name` (`bilevel` or a variant) from its config block: the
  entries named like options, and the entry `inner_batch_size` as the option `batch_size`
  (0: None, the exact full-bank gradient)."""
  options = inputs.block_options(name, block)
  if block is not None and "inner_batch_size" in block and "batch_size" in base.get(name).options:
    options["batch_size"] = block["inner_batch_size"]
  if "batch_size" in options:
    options["batch_size"] = options["batch_size"] or None
  return options


def prepare(block: Any, data: Any, *, progress: bool = False) -> inputs.Prepared:
  """Nystrom features and banks of `data`'s training set (cached), and the options."""
  from bilevel_jax.ntk import features  # pylint: disable=g-import-not-at-top

  kernel = features.prepare(block, data, progress=progress)
  options = block_options("bilevel", block)
  options["bank_fn"] = kernel.bank_fn
  return inputs.Prepared(options, kernel.context_fields, kernel)


def with_selection_options(fn):
  """Gives `fn(key, ctx, b, **options)` the keyword options `bank_fn=None` and the fields of
  `SelectionSettings` with their defaults (`select_batch`'s) as its signature, which
  `base.register` reads (float options traced, the rest static). `fn` receives only the options
  passed; `select_batch` applies its defaults."""
  positional = list(inspect.signature(fn).parameters.values())[:3]  # key, ctx, b
  options = [inspect.Parameter("bank_fn", inspect.Parameter.KEYWORD_ONLY, default=None)]
  options += [
    inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
    for f in dataclasses.fields(settings_lib.SelectionSettings)
  ]
  fn.__signature__ = inspect.Signature(positional + options)
  return fn


@base.register(
  "bilevel",
  kernel=True,
  diagnostics=True,
  config_block="bilevel",
  prepare=prepare,
  check_config=check_config,
  static_options=("uniform_fraction",),
)  # it decides the number of greedy picks
@with_selection_options
def bilevel(
  key: jax.Array, ctx: base.RoundContext, b: int, **options: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Bilevel greedy picks followed by round(uniform_fraction * b) uniform ones.

  Returns the (b,) indices and, per greedy pick (n,), its `score`, the `inner_loss` F and
  `outer_loss` G after its inner solve, the relative `cg_residual` of its inverse-HVP, the
  `inner_grad_norm` ||grad F|| it was scored at, the `inner_iterations` (Adam or Newton steps),
  the `ihvp_iterations` (CG), and `proxy_logits` (N, C): the features times the weights of the
  last inner solve. Options: `bank_fn` and the selection settings (uniform_fraction, lr, l2,
  inner_steps, batch_size, cg_steps, solver, loss_reduction, tolerances and caps; see
  `bilevel_jax.bilevel.select.select_batch`).

  Uses ctx.features (N, m), ctx.probs (N, C) as pseudo-labels, the labeled bank ctx.bank
  (L, A, m) and `bank_fn(ctx.bank_params, key, index) -> (A, m)` for the copies of picked
  points. Without a bank, every point enters the inner problem with its clean features only.
  """
  bank_fn = options.pop("bank_fn", None)
  labeled_labels = ctx.labels[ctx.labeled_idx]
  if ctx.bank is None:
    if bank_fn is not None:
      # Otherwise the copies bank_fn would make are silently replaced by clean features.
      raise ValueError(
        "The bilevel strategy got a bank_fn option but RoundContext.bank is None; "
        "expected ctx.bank (L, A, m) with the labeled points' augmented copies."
      )
    bank = ctx.features[ctx.labeled_idx][:, None, :]
    bank_fn, bank_params = clean_copy_bank_fn, ctx.features
  else:
    if bank_fn is None:
      raise ValueError(
        "RoundContext.bank is set, so the bilevel strategy needs a bank_fn option "
        "that makes the copies of picked points."
      )
    bank, bank_params = ctx.bank, ctx.bank_params
  selection = bilevel_select.select_batch(
    key,
    ctx.features,
    ctx.probs.astype(ctx.features.dtype),
    ctx.labeled_idx,
    labeled_labels,
    bank,
    bank_fn,
    bank_params,
    b=b,
    **options,
  )
  diagnostics = {
    "score": selection.scores,
    "inner_loss": selection.inner_loss,
    "outer_loss": selection.outer_loss,
    "cg_residual": selection.cg_residual,
    "inner_grad_norm": selection.inner_grad_norm,
    "inner_iterations": selection.inner_iterations,
    "ihvp_iterations": selection.ihvp_iterations,
    # The proxy of the last inner solve on the training set (N, C), for the
    # loop's pick diagnostics (al/diagnostics.py; not stored per pick).
    "proxy_logits": ctx.features @ selection.w,
  }
  return selection.indices.astype(jnp.int32), diagnostics
