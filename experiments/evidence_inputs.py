"""The fixed inputs of `experiments.bilevel_evidence`: the data, the bilevel strategy's inputs
per number of landmarks m (built once, features cached on disk) and one batch selection by
method on a proxy model's pseudo-labels.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bilevel_jax import strategies
from bilevel_jax.strategies import inputs as strategy_inputs


class Data(NamedTuple):
  """What the bilevel strategy's `prepare` reads (as the AL loop's `Data`)."""

  name: str
  train_waveforms: np.ndarray  # (N, 16000)
  noise: np.ndarray  # (K, L)


class Run(NamedTuple):
  """One experiment's fixed inputs."""

  config: ml_collections.ConfigDict
  data: Data
  classes: np.ndarray  # (N,) training labels
  test_waveforms: np.ndarray
  test_classes: np.ndarray
  num_classes: int
  out_dir: pathlib.Path
  command: str


class Inputs:
  """The bilevel strategy's inputs for m landmarks, built once per m (features cached on disk)."""

  def __init__(self, run: Run, m: int):
    config = ml_collections.ConfigDict({"bilevel": run.config.bilevel.to_dict()})
    config.bilevel.landmarks = m
    self.m, self.n_aug = m, int(config.bilevel.augmentations)
    self.prepared = strategy_inputs.prepare(
      "bilevel", config, run.data, progress=run.config.progress
    )
    self.kernel = self.prepared.builder  # ntk.features.KernelFeatures
    self.stream = jax.random.key(run.config.bank_seed)
    self._test_z = None
    self._test_waveforms = run.test_waveforms

  @property
  def train_z(self) -> np.ndarray:
    return self.kernel.features  # (N, m)

  def test_z(self) -> np.ndarray:
    if self._test_z is None:
      self._test_z = self.kernel.features_of(self._test_waveforms)  # (T, m)
    return self._test_z

  def banks(self, indices) -> np.ndarray:
    """(L, A, m) features of the augmented copies (the same copies for every seed)."""
    return self.kernel.banks(0, np.asarray(indices), self.stream)

  def context(self, labeled) -> dict:
    return self.prepared.context(0, np.asarray(labeled), self.stream)


INPUTS: dict[int, Inputs] = {}


def inputs_for(run: Run, m: int) -> Inputs:
  if m not in INPUTS:
    INPUTS[m] = Inputs(run, m)
  return INPUTS[m]


def meta(run: Run) -> dict:
  return {
    "command": run.command,
    "config": run.config.to_dict(),
    "pipeline": "strategies 'bilevel' prepare (bilevel_jax.ntk.features)",
  }


def select_by(run: Run, method, key, feats: Inputs, pseudo, labeled, rng):
  """Indices of the next batch by `method`; returns (indices, diagnostics)."""
  b = run.config.batch_size_per_round
  available = np.setdiff1d(np.arange(len(pseudo)), labeled)
  if method == "uniform":
    return rng.choice(available, b, replace=False), {}
  if method == "max_entropy":
    ent = -np.sum(pseudo * np.log(np.maximum(pseudo, 1e-12)), axis=1)
    return available[np.argsort(-ent[available], kind="stable")[:b]], {}
  if method != "bilevel":
    raise ValueError(f"unknown method {method!r}")
  n = len(pseudo)
  mask = np.zeros(n, bool)
  mask[labeled] = True
  labels = np.full(n, -1, np.int32)
  labels[labeled] = run.classes[labeled]
  ctx = strategies.RoundContext(
    probs=jnp.asarray(pseudo, jnp.float32),
    labeled_mask=mask,
    labeled_idx=np.asarray(labeled, np.int32),
    labels=labels,
    **feats.context(labeled),
  )
  picks, diag = strategies.select_with_diagnostics("bilevel", key, ctx, b, **feats.prepared.options)
  return np.asarray(picks), jax.device_get(diag)
