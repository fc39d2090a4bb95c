"""Value guards on the AL path: a round's model outputs, features and selection scores.

Registered strategies are jitted, so checks inside them never see values; and argmax / top_k
over NaN scores silently return the first pool indices. The loop therefore checks the
RoundContext before a strategy runs and the picks and diagnostics after it. Device arrays are
reduced on the device in one small program and only counts and first indices are fetched (no
pool-sized host copy). NaN/inf raises `NonFiniteError` naming round, strategy and input; inputs
that make every pool point look alike (all-equal rows, e.g. all-zero features) and picks that
come out in index order only warn: a strategy may legitimately see ties.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax import strategies

log = logging.getLogger(__name__)

# What each RoundContext field is, for the error messages.
FIELDS = {
  "probs": "the model's clean predictions on the training set",
  "aug_probs": "the model's predictions under augmentation",
  "embeddings": "the model's last-layer embeddings",
  "aug_embeddings": "the model's last-layer embeddings under augmentation",
  "features": "the Nystrom kernel features",
  "bank": "the kernel features of the labeled points' augmented copies",
}


class NonFiniteError(FloatingPointError):
  """A round's model outputs, features or selection scores hold NaN/inf."""


class DegenerateInputWarning(RuntimeWarning):
  """Every pool point looks the same to a strategy (its picks follow the index order)."""


@jax.jit
def _summaries(arrays: dict[str, jax.Array]) -> dict[str, tuple[jax.Array, ...]]:
  """Per array: (NaN/inf count, first bad flat index, all rows equal)."""
  out = {}
  for name, x in arrays.items():
    bad = jnp.logical_not(jnp.isfinite(x)).ravel()
    rows = x.reshape(x.shape[0], -1)
    out[name] = (jnp.sum(bad, dtype=jnp.int32), jnp.argmax(bad), jnp.all(rows == rows[:1]))
  return out


def _reads(strategy: strategies.Strategy) -> set[str]:
  """The context fields whose values decide this strategy's scores."""
  fields = set()
  if strategy.kernel:
    fields |= {"features", "probs"}
  if strategy.embeddings:
    fields.add("embeddings")
  if strategy.augmentations:
    fields.add("aug_probs")
  if strategy.augmentations and strategy.embeddings:
    fields.add("aug_embeddings")
  return fields


def check_context(r: int, name: str, ctx: strategies.RoundContext) -> None:
  """Raises NonFiniteError if a model output or feature array of `ctx` has NaN/inf; warns if
  an input the strategy scores with is the same for every point.

  Args:
    r: round number (for the message).
    name: registered strategy name.
    ctx: the round's RoundContext.
  """
  arrays = {f: getattr(ctx, f) for f in FIELDS if getattr(ctx, f) is not None}
  # aug_* are (K, N, ...): compare points, not augmentation draws.
  shaped = {
    f: (jnp.moveaxis(jnp.asarray(x), 1, 0) if f.startswith("aug_") else jnp.asarray(x))
    for f, x in arrays.items()
    if np.size(x)
  }
  summary = jax.device_get(_summaries(shaped))
  for field, (count, first, all_equal) in summary.items():
    if count:
      index = [int(i) for i in np.unravel_index(int(first), np.shape(shaped[field]))]
      if field.startswith("aug_"):
        index[0], index[1] = index[1], index[0]  # back to (augmentation, point, class)
      raise NonFiniteError(
        f"Round {r}, strategy {name!r}: {FIELDS[field]} (RoundContext.{field}, shape "
        f"{tuple(np.shape(arrays[field]))}) hold {int(count)} NaN/inf entries (first at "
        f"index {index}); a selection on them would pick by index. Check the round's "
        "training (diverged?) and the inputs."
      )
  for field in sorted(_reads(strategies.get(name)) & set(summary)):
    if summary[field][2]:
      _warn(
        f"Round {r}, strategy {name!r}: {FIELDS[field]} (RoundContext.{field}) are the "
        "same for every training point, so every pool point gets the same score and the "
        "picks follow the index order."
      )


def check_selection(
  r: int, name: str, picks: np.ndarray, diagnostics: dict[str, Any], labeled: np.ndarray
) -> None:
  """Raises NonFiniteError on NaN/inf selection scores; warns when the scored picks are the
  first pool points in index order (all-equal scores).

  Args:
    r, name: round and strategy (for the message).
    picks: (b,) host int picks.
    diagnostics: the strategy's {name: (n,) array}; a "score" entry is checked.
    labeled: (L,) labeled indices before the picks.
  """
  scores = diagnostics.get("score")
  n_scored = len(picks)
  if scores is not None:
    s = np.asarray(scores, np.float64)  # (n,): one value per greedy pick
    n_scored = s.shape[0]
    if not np.all(np.isfinite(s)):
      k = int(np.argmin(np.isfinite(s)))
      raise NonFiniteError(
        f"Round {r}, strategy {name!r}: the selection scores are not finite (greedy pick {k} "
        f"of {s.size} scored {s[k]}); its picks would follow the index order. Check the "
        "features and the strategy's options (lr, l2)."
      )
  if n_scored < 2:
    return
  pool = np.setdiff1d(np.arange(int(max(np.max(picks), np.max(labeled, initial=0))) + 1), labeled)
  if np.array_equal(np.asarray(picks[:n_scored]), pool[:n_scored]):
    _warn(
      f"Round {r}, strategy {name!r}: the {n_scored} scored picks are the first pool points "
      f"in index order ({pool[:n_scored].tolist()}): the scores were probably all equal."
    )


def _warn(message: str) -> None:
  log.warning(message)
  warnings.warn(message, DegenerateInputWarning, stacklevel=3)
