"""Round-0 models on disk, shared by every strategy of a seed across processes and sessions.

Round 0 trains on the same class-covering initial pool for every strategy of a seed, so the
loop trains it once and keeps its EMA variables in `workdir/models/` (~0.3 MB for WRN-10-1;
git-ignored). The file name carries a SHA-1 of everything the model depends on (train config,
labeled indices, training key, train-set size and class count), so a changed setting never
reads a stale model.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import jax
import numpy as np
from flax import serialization

from bilevel_jax.ssl import state as ssl_state
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.utils import io


def model_path(
  workdir: str | pathlib.Path,
  dataset: str,
  seed: int,
  train_config: dict,
  labeled: np.ndarray,
  key: jax.Array,
  num_train: int,
  num_classes: int,
  train_subset: dict | None = None,
) -> pathlib.Path:
  """workdir/models/{dataset}_seed{seed}_round0_{sha1[:16]}.msgpack.

  `train_subset` ({train: clips, seed}) names a random training subset; None (all clips) keeps
  the names of files written before subsets were part of the key.
  """
  train_config = ssl_state.comparable_train_config(train_config)
  spec = {
    "train": train_config,
    "labeled": np.asarray(labeled).tolist(),
    "key": np.asarray(jax.random.key_data(key)).tolist(),
    "num_train": int(num_train),
    "num_classes": int(num_classes),
  }
  if train_subset:
    # Two subsets of the same size hold different clips: same indices, different model.
    spec["train_subset"] = {k: int(v) for k, v in sorted(train_subset.items())}
  blob = json.dumps(spec, sort_keys=True, default=str)
  digest = hashlib.sha1(blob.encode()).hexdigest()[:16]
  return pathlib.Path(workdir) / "models" / f"{dataset}_seed{seed}_round0_{digest}.msgpack"


def save(path: pathlib.Path, classifier: ssl_train.Classifier) -> None:
  """Writes the classifier's variables and feature normalisation atomically."""
  payload = {
    "variables": jax.device_get(classifier.variables),
    "feature_mean": np.float64(classifier.feature_mean),
    "feature_std": np.float64(classifier.feature_std),
  }
  path.parent.mkdir(parents=True, exist_ok=True)
  io.atomic_write_bytes(path, serialization.msgpack_serialize(payload))


def load(
  path: pathlib.Path, train_config: Any, num_classes: int, noise: np.ndarray
) -> ssl_train.Classifier | None:
  """The Classifier saved at `path` (default audio front end), or None if there is none."""
  if not path.exists():
    return None
  try:
    payload = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path} is not a readable round-0 model ({e}); delete it to retrain.") from e
  tc = ssl_train.TrainConfig.from_config(train_config)
  featurize_fn, augment_featurize_fn = ssl_train.default_audio()
  return ssl_train.Classifier(
    ssl_train.create_model(tc, num_classes),
    payload["variables"],
    float(payload["feature_mean"]),
    float(payload["feature_std"]),
    featurize_fn,
    augment_featurize_fn,
    jax.numpy.asarray(noise, jax.numpy.float32),
  )
