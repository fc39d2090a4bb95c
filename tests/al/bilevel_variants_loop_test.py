"""The bilevel variants end to end through the AL loop at the tiny scale (fsdd.py:tiny)."""

from __future__ import annotations

import numpy as np
import pytest

from bilevel_jax.al import loop
from bilevel_jax.al import results
from bilevel_jax.utils import io
from experiments.configs import fsdd as fsdd_config

_VARIANTS = ("bilevel_tempered", "bilevel_ssl", "bilevel_embed")


@pytest.mark.slow
def test_variants_run_through_the_loop_and_record_diagnostics(tmp_path, fsdd_root):
  c = fsdd_config.get_config("tiny")
  c.progress = False
  c.strategy = "uniform," + ",".join(_VARIANTS)
  # Non-default settings, so each variant's own entries reach it through its prepare hook.
  c.bilevel_tempered.pseudo_temperature = 0.5
  c.bilevel_ssl.update(ssl_threshold=0.0, ssl_weight=1.0)
  c.bilevel_embed.augmentations = 2
  loop.run(c, tmp_path)
  b = c.al.batch_size_per_round
  initial = io.read_json(tmp_path / "fsdd_uniform_seed0.json")["initial_indices"]
  for name in _VARIANTS:
    rec = io.read_json(results.result_path(tmp_path, "fsdd", name, 0))
    assert rec["complete"] and rec["initial_indices"] == initial  # shared round-0 pool
    n_greedy = b - round(c[name].uniform_fraction * b)
    for r in rec["rounds"][:-1]:
      assert len(set(r["picks"]) | set(r["labeled_indices"])) == len(r["labeled_indices"]) + b
      sel = r["selection"]
      assert all(len(v) == n_greedy and np.isfinite(v).all() for v in sel.values())
      assert 0 <= r["pick_diagnostics"]["proxy_pool_accuracy"] <= 1  # each has a proxy
      if name == "bilevel_ssl":
        # threshold 0: every pool point is confident (300 clips minus the labeled ones)
        assert sel["num_confident"] == [300 - len(r["labeled_indices"])] * n_greedy
  # A result written before the variant blocks existed still resumes.
  path = results.result_path(tmp_path, "fsdd", "uniform", 0)
  rec = io.read_json(path)
  old = {k: v for k, v in rec["config"].items() if k not in results.ADDED_BLOCKS}
  results.save(path, dict(rec, config=old))
  results.load_for_resume(path, rec)
