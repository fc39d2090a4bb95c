"""Pick statistics of selection variants on one round (`experiments/pick_stats.py`).

Builds on the FSDD AL config of the same mode (data, training, `bilevel` entries), adding:
  seeds           'a-b' or 'a,b,c'; development seeds (100-105) by default. Seeds 0-5 are the
                  committed comparisons' and are refused unless allow_test_seeds.
  labeled.source  'uniform' (the AL loop's class-covering initial draw of num_labels points)
                  or a result JSON path, '{seed}' replaced, whose round with num_labels labels
                  gives the labeled set (and the round's training/selection keys).
  variants        {name: {strategy, options, bilevel}}: a registered strategy, overrides of its
                  keyword options (e.g. cg_steps) and of config.bilevel entries (kernel
                  settings), as a JSON string (--config.variants='{...}'), run in order.
  retrain         also retrain with each batch added and record the test accuracy (expensive).

Modes: tiny (tests; seconds), cpu (the cpu-scale AL round: WRN-10-1, 1000 MixMatch steps).
"""

from __future__ import annotations

import json

import ml_collections

from experiments.configs import fsdd as fsdd_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = arg or "cpu"
  if mode not in ("tiny", "cpu"):
    raise ValueError(f"Unknown pick_stats config mode {mode!r}; expected 'tiny' or 'cpu'.")
  c = fsdd_config.get_config(mode)
  c.strategy = "uniform"  # unused (variants say what runs); kept for the AL config's checks
  c.seeds = "100-105"
  c.allow_test_seeds = False
  c.labeled = ml_collections.ConfigDict(dict(source="uniform", num_labels=10))
  c.retrain = False
  # JSON (a string keeps the order; a ConfigDict sorts its keys), cheapest first: their
  # statistics are written before the kernel features are computed.
  c.variants = json.dumps(
    {
      "uniform": {"strategy": "uniform"},
      "kcenter": {"strategy": "kcenter"},
      "bilevel": {"strategy": "bilevel"},
    }
  )
  if mode == "tiny":
    c.seeds = "100"
  return c
