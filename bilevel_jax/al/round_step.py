"""One AL round after training: evaluate the model, select the next batch, record both.

`finish_round` returns the round's entry of the result JSON (see `results.py`): test accuracy
and timings, and (unless the budget is reached) the picks with their diagnostics.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import numpy as np

from bilevel_jax import strategies
from bilevel_jax.al import diagnostics as pick_diagnostics
from bilevel_jax.al import guards
from bilevel_jax.al import outputs as outputs_lib
from bilevel_jax.al import pool as pool_lib
from bilevel_jax.al import results
from bilevel_jax.ssl import evaluate as ssl_evaluate
from bilevel_jax.utils import io

log = logging.getLogger(__name__)


def finish_round(
  config,
  name,
  strategy,
  prepared,
  seed,
  r,
  labeled,
  classifier,
  train_seconds,
  data,
  workdir,
  bar=None,
) -> dict[str, Any]:
  """Evaluates the round's model and, unless the budget is reached, selects the next batch."""
  say = bar.log if bar is not None else log.info
  say("round %d seed %d: evaluating on %d test clips", r, seed, len(data.test_labels))
  t0 = time.perf_counter()
  ev = ssl_evaluate.evaluate(
    classifier,
    data.test_waveforms,
    data.test_labels,
    data.num_classes,
    batch_size=config.predict_chunk,
  )
  entry = {
    "round": r,
    "num_labeled": int(len(labeled)),
    "labeled_indices": [int(i) for i in labeled],
    "test_accuracy": float(ev.accuracy),
    "train_seconds": float(train_seconds),
    "device": str(jax.devices()[0].device_kind),  # runs may resume on other machines
    "eval_seconds": time.perf_counter() - t0,
    "select_seconds": 0.0,
    "picks": None,
    "pick_labels": None,
    "picks_misclassified": None,
  }
  if len(labeled) >= config.al.budget:
    return entry
  say(
    "round %d seed %d: selecting %d of %d clips (%s)",
    r,
    seed,
    config.al.batch_size_per_round,
    len(data.train_labels) - len(labeled),
    name,
  )
  t0 = time.perf_counter()
  st = pool_lib.streams(seed)
  outs = outputs_lib.model_outputs(
    classifier,
    data.train_waveforms,
    key=pool_lib.round_key(st.predict, r),
    num_augmentations=strategy.augmentations,
    batch_size=config.predict_chunk,
  )
  extra = prepared.context(seed, labeled, st.bank) if prepared.context else {}
  ctx = outputs_lib.round_context(outs, data.train_labels, labeled, **extra)
  guards.check_context(r, name, ctx)  # strategies are jitted: their value checks cannot run
  picks, diagnostics = strategies.select_with_diagnostics(
    name, pool_lib.round_key(st.select, r), ctx, config.al.batch_size_per_round, **prepared.options
  )
  picks = np.asarray(picks)
  guards.check_selection(r, name, picks, diagnostics, labeled)
  entry["select_seconds"] = time.perf_counter() - t0
  pred = outs.probs.argmax(-1)
  entry["picks"] = [int(i) for i in picks]
  entry["pick_labels"] = [int(data.train_labels[i]) for i in picks]
  entry["picks_misclassified"] = int(np.sum(pred[picks] != data.train_labels[picks]))
  entry["pool_accuracy"] = float(np.mean(pred == data.train_labels))
  diagnostics, proxy_logits = pick_diagnostics.split_proxy(diagnostics)
  if diagnostics:  # e.g. bilevel: per greedy pick score, F, G and CG residual
    entry["selection"] = results.selection_entry(diagnostics)
  entry["pick_diagnostics"] = pick_diagnostics.round_entry(
    outs.probs,
    data.train_labels,
    labeled,
    picks,
    proxy_logits=proxy_logits,
    diagnostics=diagnostics,
  )
  if r == 0:
    io.atomic_savez(
      results.figure2_path(workdir, config.dataset, name, seed),
      compressed=True,
      embeddings=outs.embeddings.astype(np.float32),
      probs=outs.probs,
      labels=data.train_labels,
      labeled_idx=np.asarray(labeled),
      picks=picks,
      test_accuracy=ev.accuracy,
    )
  return entry
