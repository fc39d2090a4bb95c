"""Turns a trained classifier into the `RoundContext` a strategy reads."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.ssl import evaluate as ssl_evaluate
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax import strategies


class ModelOutputs(NamedTuple):
  """Host-side outputs of one round's model on the training set (N points)."""

  probs: np.ndarray  # (N, C) clean soft predictions
  embeddings: np.ndarray  # (N, E) last-layer embeddings
  aug_probs: np.ndarray | None  # (K, N, C) or None
  aug_embeddings: np.ndarray | None = None  # (K, N, E) embeddings of the same K draws, or None


def model_outputs(
  classifier: ssl_train.Classifier,
  waveforms: np.ndarray,
  *,
  key: jax.Array,
  num_augmentations: int,
  batch_size: int,
) -> ModelOutputs:
  """Clean predictions and embeddings, plus K augmented predictions when K > 0.

  Args:
    classifier: a trained round model.
    waveforms: (N, 16000) float32 training clips.
    key: PRNG key of the K augmentation draws.
    num_augmentations: K (0: no augmented predictions).
    batch_size: clips per forward pass.
  """
  clean = ssl_evaluate.predict(classifier, waveforms, batch_size=batch_size)
  aug = aug_emb = None
  if num_augmentations:
    pred = ssl_evaluate.predict(
      classifier, waveforms, key=key, num_augmentations=num_augmentations, batch_size=batch_size
    )
    aug, aug_emb = pred.probs, pred.aug_embeddings
  return ModelOutputs(clean.probs, clean.embeddings, aug, aug_emb)


def round_context(
  outputs: ModelOutputs,
  labels: np.ndarray,
  labeled_idx: np.ndarray,
  *,
  features: Any = None,
  bank: Any = None,
  bank_params: Any = None,
) -> strategies.RoundContext:
  """Builds the RoundContext; pool labels are hidden (-1) so no strategy can peek at them.

  Args:
    outputs: the round model's outputs on the N training points.
    labels: (N,) true labels of the training set.
    labeled_idx: (L,) labeled indices in labeling order.
    features: (N, m) Nystrom features (bilevel) or None.
    bank: (L, A, m) augmented copies of the labeled points (bilevel) or None.
    bank_params: pytree for the bilevel bank_fn, or None.
  """
  n = labels.shape[0]
  labeled_idx = np.asarray(labeled_idx, np.int32)
  chex.assert_shape(labels, (n,))
  chex.assert_shape(outputs.probs, (n, None))
  chex.assert_shape(outputs.embeddings, (n, None))
  if outputs.aug_probs is not None:
    chex.assert_shape(outputs.aug_probs, (None,) + outputs.probs.shape)
  if outputs.aug_embeddings is not None:
    chex.assert_shape(outputs.aug_embeddings, (None,) + outputs.embeddings.shape)
  if features is not None:
    chex.assert_shape(features, (n, None))
  if bank is not None:
    chex.assert_shape(bank, (labeled_idx.shape[0], None, None))
  # A repeated or out-of-range index would silently shrink or corrupt the labeled mask.
  if (
    labeled_idx.ndim != 1
    or len(np.unique(labeled_idx)) != labeled_idx.shape[0]
    or labeled_idx.min(initial=0) < 0
    or labeled_idx.max(initial=0) >= n
  ):
    raise ValueError(f"labeled_idx must be distinct indices in [0, {n}); got {labeled_idx}.")
  mask = np.zeros(n, bool)
  mask[labeled_idx] = True
  visible = np.where(mask, labels, -1).astype(np.int32)
  opt = lambda x: None if x is None else jnp.asarray(x)
  return strategies.RoundContext(
    probs=jnp.asarray(outputs.probs, jnp.float32),
    labeled_mask=jnp.asarray(mask),
    labeled_idx=jnp.asarray(labeled_idx),
    labels=jnp.asarray(visible),
    aug_probs=opt(outputs.aug_probs),
    embeddings=opt(outputs.embeddings),
    aug_embeddings=opt(outputs.aug_embeddings),
    features=opt(features),
    bank=opt(bank),
    bank_params=bank_params,
  )
