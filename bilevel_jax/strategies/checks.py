"""Checks around a strategy call: its inputs (`RoundContext`, traced options) and its outputs.

A faulty custom strategy fails here, naming itself, instead of corrupting the labeled set.
Value checks run on concrete inputs only; device arrays are reduced where they live.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.utils import tracing

if TYPE_CHECKING:
  from bilevel_jax.strategies.base import RoundContext, Strategy


def check_output(name: str, diagnostics: bool, out: Any) -> Any:
  """Raises TypeError (at trace time) if `out` is not what `register(diagnostics=...)` says."""
  pair = isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], dict)
  if diagnostics and not pair:
    got = (
      f"a {type(out).__name__} of length {len(out)}"
      if isinstance(out, (tuple, list))
      else f"an array of shape {out.shape}"
      if hasattr(out, "shape")
      else f"a {type(out).__name__}"
    )
    raise TypeError(
      f"Strategy {name!r} is registered with diagnostics=True, so it must return "
      f"(indices, {{name: array}}); it returned {got}."
    )
  if not diagnostics and isinstance(out, (tuple, list)):
    raise TypeError(
      f"Strategy {name!r} returned a {type(out).__name__}; expected (b,) indices. "
      "Register it with diagnostics=True to return (indices, {name: array})."
    )
  return out


def check_context(strategy: Strategy, ctx: RoundContext) -> None:
  """Raises ValueError naming the RoundContext field whose shape/content is wrong."""
  if ctx.probs.ndim != 2:
    raise ValueError(f"RoundContext.probs must be (N, C), got shape {ctx.probs.shape}.")
  n, c = ctx.probs.shape
  want = {
    "labeled_mask": (n,),
    "labels": (n,),
    "aug_probs": (None, n, c),
    "embeddings": (n, None),
    "features": (n, None),
    "aug_embeddings": (None, n, None),
    "bank": (ctx.labeled_idx.shape[0], None, None),
  }
  if ctx.labeled_mask.dtype != jnp.bool_:
    raise ValueError(f"RoundContext.labeled_mask must be bool, got dtype {ctx.labeled_mask.dtype}.")
  if ctx.labeled_idx.ndim != 1 or not jnp.issubdtype(ctx.labeled_idx.dtype, jnp.integer):
    raise ValueError(
      f"RoundContext.labeled_idx must be (L,) integers, got shape "
      f"{ctx.labeled_idx.shape} dtype {ctx.labeled_idx.dtype}."
    )
  for field, shape in want.items():
    x = getattr(ctx, field)
    if x is not None and (
      x.ndim != len(shape) or any(w is not None and d != w for d, w in zip(x.shape, shape))
    ):
      raise ValueError(
        f"RoundContext.{field} has shape {x.shape}; expected "
        f"{tuple('*' if w is None else w for w in shape)} (N={n} training "
        f"points, C={c} classes, L={ctx.labeled_idx.shape[0]} labeled)."
      )
  # (L,) indices come to the host; the (N,) mask is reduced where it lives (count, L entries).
  idx = tracing.concrete(ctx.labeled_idx)
  if idx is not None and not isinstance(ctx.labeled_mask, jax.core.Tracer):
    in_range = np.all((idx >= 0) & (idx < n))
    mask_sum = int(jnp.sum(ctx.labeled_mask))
    marked = np.asarray(jnp.asarray(ctx.labeled_mask)[jnp.asarray(np.clip(idx, 0, n - 1))])
    if (
      not in_range or np.unique(idx).size != idx.size or mask_sum != idx.size or not np.all(marked)
    ):
      raise ValueError(
        f"RoundContext.labeled_mask ({mask_sum} True) and labeled_idx "
        f"({idx.size} indices) disagree; expected labeled_idx to list the True "
        f"rows of labeled_mask, each once, in [0, N={n})."
      )
  missing = []
  if strategy.augmentations:
    if ctx.aug_probs is None or ctx.aug_probs.shape[-3] < strategy.augmentations:
      missing.append(f"aug_probs with K >= {strategy.augmentations} augmentations")
  if strategy.embeddings and ctx.embeddings is None:
    missing.append("embeddings")
  if (
    strategy.embeddings
    and strategy.augmentations
    and (ctx.aug_embeddings is None or ctx.aug_embeddings.shape[-3] < strategy.augmentations)
  ):
    missing.append(f"aug_embeddings with K >= {strategy.augmentations} augmentations")
  if strategy.kernel and ctx.features is None:
    missing.append("features (Nystrom)")
  if missing:
    raise ValueError(f"Strategy {strategy.name!r} needs {', '.join(missing)} in the RoundContext.")


def check_traced_options(strategy: Strategy, options: dict[str, Any]) -> None:
  """Traced float options are not seen by checks inside the jitted strategy: check them here."""
  for k in strategy.traced_options:
    if k not in options:
      continue
    v = tracing.concrete(options[k])
    if v is not None and (
      v.shape != () or not np.issubdtype(v.dtype, np.number) or not np.isfinite(v)
    ):
      raise ValueError(
        f"Strategy {strategy.name!r}: option {k}={options[k]!r}; expected a finite number."
      )


def check_picks(name: str, picks: jax.Array, labeled_mask: jax.Array, b: int) -> None:
  if picks.shape != (b,) or not jnp.issubdtype(picks.dtype, jnp.integer):
    raise ValueError(
      f"Strategy {name!r} returned shape {picks.shape} dtype {picks.dtype}; "
      f"expected ({b},) integer indices."
    )
  got = tracing.concrete(picks)  # (b,): small
  if got is None or isinstance(labeled_mask, jax.core.Tracer):
    return
  n = labeled_mask.shape[0]
  if np.any((got < 0) | (got >= n)):
    raise ValueError(f"Strategy {name!r} returned indices {got.tolist()} outside [0, N={n}).")
  labeled = np.asarray(jnp.asarray(labeled_mask)[jnp.asarray(got)])  # (b,) entries of the mask
  if np.unique(got).size != b or np.any(labeled):
    raise ValueError(
      f"Strategy {name!r} returned {got.tolist()}: expected {b} distinct "
      f"unlabeled indices (labeled among them: {got[labeled].tolist()})."
    )
