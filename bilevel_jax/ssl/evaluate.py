"""Predictions and accuracy of a trained Classifier (EMA weights, BN running statistics)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.ssl.train import Classifier


class Predictions(NamedTuple):
  probs: np.ndarray  # (N, C) or (A, N, C) with A = num_augmentations > 0
  logits: np.ndarray  # same shape as probs
  embeddings: np.ndarray  # (N, D) last-layer embeddings of the un-augmented clips
  aug_embeddings: np.ndarray | None = None  # (A, N, D) embeddings of the augmented draws


class EvalResult(NamedTuple):
  accuracy: float  # fraction in [0, 1]
  per_class_accuracy: np.ndarray  # (C,), NaN for classes absent from the labels
  predictions: np.ndarray  # (N,) argmax classes
  probs: np.ndarray  # (N, C)
  embeddings: np.ndarray  # (N, D)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _forward(
  model, featurize_fn, augment_featurize_fn, variables, waves, noise, mean, std, key, augment
):
  feats = jax.lax.cond(
    augment, lambda: augment_featurize_fn(key, waves, noise), lambda: featurize_fn(waves)
  )
  logits, emb = model.apply(variables, (feats - mean) / std, train=False)
  return logits, emb


def predict(
  classifier: Classifier,
  waveforms: np.ndarray,
  *,
  key: jax.Array | None = None,
  num_augmentations: int = 0,
  batch_size: int = 256,
) -> Predictions:
  """Soft predictions, logits and embeddings for (N, T) waveforms.

  With num_augmentations = A > 0 (needs `key`), probs/logits are (A, N, C): one row per
  independent augmentation draw (max-entropy uses A=2, consistency A=5); embeddings always
  come from the clean clips, and aug_embeddings (A, N, D) from the same augmented draws.
  """
  waveforms = np.asarray(waveforms, np.float32)
  if waveforms.ndim != 2:
    raise ValueError(f"predict expects (N, T) waveforms; got shape {waveforms.shape}.")
  if num_augmentations < 0:
    raise ValueError(f"num_augmentations={num_augmentations}; expected >= 0.")
  if num_augmentations and key is None:
    raise ValueError("predict with num_augmentations > 0 needs a PRNG key.")
  n = waveforms.shape[0]
  pad = (-n) % batch_size if n > batch_size else 0
  bs = min(batch_size, n)
  padded = np.concatenate([waveforms, np.zeros((pad, waveforms.shape[1]), np.float32)])
  c = classifier
  fwd = functools.partial(_forward, c.model, c.featurize_fn, c.augment_featurize_fn, c.variables)
  dummy = jax.random.key(0) if key is None else key

  def run(augment: bool, k):
    logits, embs = [], []
    for i in range(0, padded.shape[0], bs):
      lo, emb = fwd(
        jnp.asarray(padded[i : i + bs]),
        c.noise,
        c.feature_mean,
        c.feature_std,
        jax.random.fold_in(k, i),
        augment,
      )
      logits.append(np.asarray(lo))
      embs.append(np.asarray(emb))
    return np.concatenate(logits)[:n], np.concatenate(embs)[:n]

  logits, embeddings = run(False, dummy)
  aug_embeddings = None
  if num_augmentations:
    draws = [run(True, jax.random.fold_in(key, a)) for a in range(num_augmentations)]
    logits = np.stack([d[0] for d in draws])
    aug_embeddings = np.stack([d[1] for d in draws])
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
  return Predictions(probs, logits, embeddings, aug_embeddings)


def evaluate(
  classifier: Classifier,
  waveforms: np.ndarray,
  labels: np.ndarray,
  num_classes: int,
  batch_size: int = 256,
) -> EvalResult:
  """Accuracy and per-class accuracy on clean clips. waveforms (N, T), labels (N,)."""
  labels = np.asarray(labels)
  if labels.shape != (np.shape(waveforms)[0],):
    raise ValueError(f"labels {labels.shape} do not match waveforms {np.shape(waveforms)}.")
  p = predict(classifier, waveforms, batch_size=batch_size)
  pred = p.probs.argmax(-1)
  correct = pred == labels
  per_class = np.array(
    [correct[labels == k].mean() if np.any(labels == k) else np.nan for k in range(num_classes)]
  )
  return EvalResult(float(correct.mean()), per_class, pred, p.probs, p.embeddings)
