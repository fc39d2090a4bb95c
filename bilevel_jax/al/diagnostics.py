"""Per-round pick diagnostics: does a batch go where the round's model errs, and how good is the
bilevel proxy?

`round_entry` gives the `pick_diagnostics` block of a round in the AL result JSON (and of a
variant in `experiments/pick_stats.py`):

  num_picks, picks_misclassified        picks whose model prediction (argmax of the round's
  pick_misclassified_rate               MixMatch probs) differs from the true label
  pool_size, pool_errors                the unlabeled pool (training set minus the labeled
  pool_error_rate                       points the model was trained with), same rule
  misclassified_ratio                   pick rate / pool rate (None when the pool rate is 0)
  pick_class_histogram                  (C,) true classes of the picks
  pick_prediction_histogram             (C,) predicted classes of the picks
  greedy: {num_picks, picks_misclassified, pick_misclassified_rate}
                                        the strategy's own (e.g. bilevel's greedy) picks, the
                                        first n of the batch, when it records per-pick values
  proxy_pool_accuracy                   strategies with a proxy (bilevel): argmax of the proxy's
  proxy_pseudo_agreement                logits (last inner solve) vs true labels / vs argmax of
                                        the pseudo-labels (the model's probs), on the pool
  inner_grad_norm, ihvp_residual        per greedy pick, copied from the strategy's diagnostics
                                        when it records them (absent otherwise)

A strategy exposes its proxy by returning `PROXY_LOGITS` ((N, C) logits on the training set)
among its diagnostics; `split_proxy` takes it out before the per-pick values are stored.
The rates are computed on device in one jitted function.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

PROXY_LOGITS = "proxy_logits"
# Names a strategy may use for the per-pick inner optimality and inverse-HVP residual, in
# order of preference (the first present is recorded).
GRAD_NORM_KEYS = ("inner_grad_norm", "grad_norm", "inner_gradient_norm")
IHVP_RESIDUAL_KEYS = ("ihvp_residual", "cg_residual")


def split_proxy(diagnostics: dict[str, Any] | None) -> tuple[dict[str, Any], Any]:
  """(per-pick diagnostics without the proxy logits, proxy logits (N, C) or None)."""
  diagnostics = dict(diagnostics or {})
  return diagnostics, diagnostics.pop(PROXY_LOGITS, None)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_greedy"))
def _counts(probs, labels, labeled_mask, picks, proxy_logits, *, num_classes, num_greedy):
  pred = jnp.argmax(probs, -1)
  wrong = pred != labels
  pool = ~labeled_mask
  out = {
    "picks_misclassified": jnp.sum(wrong[picks]),
    "pool_size": jnp.sum(pool),
    "pool_errors": jnp.sum(wrong & pool),
    "pick_class_histogram": jnp.zeros(num_classes, jnp.int32).at[labels[picks]].add(1),
    "pick_prediction_histogram": jnp.zeros(num_classes, jnp.int32).at[pred[picks]].add(1),
    "greedy_misclassified": jnp.sum(wrong[picks[:num_greedy]]),
  }
  if proxy_logits is not None:
    proxy_pred = jnp.argmax(proxy_logits, -1)
    out["proxy_correct"] = jnp.sum((proxy_pred == labels) & pool)
    out["proxy_agree"] = jnp.sum((proxy_pred == pred) & pool)
  return out


def _first(diagnostics: dict[str, Any], keys: tuple[str, ...]) -> list[float] | None:
  for k in keys:
    if k in diagnostics:
      return [float(f"{x:.8g}") for x in np.asarray(diagnostics[k], np.float64).ravel()]
  return None


def _num_greedy(diagnostics: dict[str, Any], b: int) -> int:
  """Length of the strategy's per-pick arrays (its own picks come first), 0 without any."""
  lengths = [np.shape(v)[0] for v in diagnostics.values() if np.ndim(v) == 1]
  return min(min(lengths), b) if lengths else 0


def round_entry(
  probs: Any,
  labels: Any,
  labeled_idx: Any,
  picks: Any,
  *,
  proxy_logits: Any = None,
  diagnostics: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """The `pick_diagnostics` block of one round (JSON-able; see the module docstring).

  Args:
    probs: (N, C) the round model's clean soft predictions on the training set.
    labels: (N,) true labels of the training set.
    labeled_idx: (L,) the points the round's model was trained with.
    picks: (b,) the batch selected in the round (the strategy's own picks first).
    proxy_logits: (N, C) the proxy's logits on the training set, or None.
    diagnostics: the strategy's per-pick diagnostics without the proxy ({name: (n,)}), or None.
  """
  probs = jnp.asarray(probs)
  n, c = probs.shape
  labels = jnp.asarray(labels, jnp.int32)
  picks = jnp.asarray(picks, jnp.int32)
  chex.assert_shape(labels, (n,))
  chex.assert_rank(picks, 1)
  if proxy_logits is not None:
    proxy_logits = jnp.asarray(proxy_logits)
    chex.assert_shape(proxy_logits, (n, c))
  diagnostics = diagnostics or {}
  b = int(picks.shape[0])
  num_greedy = _num_greedy(diagnostics, b)
  mask = jnp.zeros(n, bool).at[jnp.asarray(labeled_idx, jnp.int32)].set(True)
  got = jax.device_get(
    _counts(probs, labels, mask, picks, proxy_logits, num_classes=c, num_greedy=num_greedy)
  )
  wrong, pool, pool_errors = (
    int(got["picks_misclassified"]),
    int(got["pool_size"]),
    int(got["pool_errors"]),
  )
  pick_rate = wrong / b
  pool_rate = pool_errors / pool if pool else None
  out = {
    "num_picks": b,
    "picks_misclassified": wrong,
    "pick_misclassified_rate": pick_rate,
    "pool_size": pool,
    "pool_errors": pool_errors,
    "pool_error_rate": pool_rate,
    "misclassified_ratio": pick_rate / pool_rate if pool_rate else None,
    "pick_class_histogram": [int(x) for x in got["pick_class_histogram"]],
    "pick_prediction_histogram": [int(x) for x in got["pick_prediction_histogram"]],
  }
  if num_greedy:
    g = int(got["greedy_misclassified"])
    out["greedy"] = {
      "num_picks": num_greedy,
      "picks_misclassified": g,
      "pick_misclassified_rate": g / num_greedy,
    }
  if proxy_logits is not None and pool:
    out["proxy_pool_accuracy"] = int(got["proxy_correct"]) / pool
    out["proxy_pseudo_agreement"] = int(got["proxy_agree"]) / pool
  for name, keys in (("inner_grad_norm", GRAD_NORM_KEYS), ("ihvp_residual", IHVP_RESIDUAL_KEYS)):
    values = _first(diagnostics, keys)
    if values is not None:
      out[name] = values
  return out
