"""Pick-statistics harness: bad settings fail before compute; on the tiny config it trains the
AL loop's own round model, picks what the loop picks, caches the model and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bilevel_jax.al import loop
from bilevel_jax.al import pick_stats
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.utils import io
from experiments.configs import pick_stats as pick_stats_config
from tests.al import configs


def _tiny(**overrides):
  return configs.with_overrides(pick_stats_config.get_config("tiny"), overrides)


def test_parse_seeds():
  assert pick_stats.parse_seeds("100-102") == (100, 101, 102)
  assert pick_stats.parse_seeds("100,105") == (100, 105)
  assert pick_stats.parse_seeds("7") == (7,)
  for bad in ("", "a-b", "-3", "5-"):
    with pytest.raises(ValueError, match="config.seeds="):
      pick_stats.parse_seeds(bad)


@pytest.mark.parametrize(
  "overrides, variants, message",
  [
    (dict(seeds="3,100"), None, r"includes \[3\], the seeds of the committed comparisons"),
    ({}, '{"x": {"strategy": "nope"}}', r"Unknown strategy 'nope'"),
    ({}, '{"x": ', "variants is not valid JSON"),
    ({}, '{"x": {"strategy": "uniform", "opts": {}}}', r"got unknown \['opts'\]"),
    (
      {},
      '{"x": {"strategy": "bilevel", "block": {"landmark": 3}}}',
      "'landmark' is not a config.bilevel entry",
    ),
    (
      {},
      '{"x": {"strategy": "bilevel", "block": {"landmarks": 0}}}',
      r"config.bilevel.landmarks=0",
    ),
    ({}, '{"x": {"strategy": "kcenter", "block": {"landmarks": 3}}}', "has no config block"),
    (
      {"labeled.source": "missing/fsdd_bilevel_seed{seed}.json"},
      None,
      r"no file missing/fsdd_bilevel_seed100.json",
    ),
  ],
)
def test_bad_settings_fail_before_compute(tmp_path, no_training, overrides, variants, message):
  with pytest.raises(ValueError, match=message):
    pick_stats.run(_tiny(**overrides), tmp_path, variants=variants)
  assert not any(tmp_path.iterdir())


def test_labeled_set_from_a_result_json(tmp_path):
  rec = {
    "seed": 101,
    "train_size": 40,
    "rounds": [
      {"round": 0, "num_labeled": 10, "labeled_indices": list(range(10))},
      {"round": 1, "num_labeled": 15, "labeled_indices": list(range(15))},
    ],
  }
  io.atomic_write_json(tmp_path / "fsdd_bilevel_seed101.json", rec)
  c = _tiny(
    **{"labeled.source": str(tmp_path / "fsdd_bilevel_seed{seed}.json"), "labeled.num_labels": 15}
  )
  idx, r, tag = pick_stats.labeled_set(c, 101, 40, np.arange(40) % 10, 10)
  assert idx.tolist() == list(range(15)) and r == 1 and tag == "fsdd_bilevel_seed101_round1"
  io.atomic_write_json(tmp_path / "fsdd_bilevel_seed102.json", rec)  # another seed's file
  with pytest.raises(ValueError, match="expected seed 102"):
    pick_stats.labeled_set(c, 102, 40, np.arange(40) % 10, 10)
  c.labeled.num_labels = 20
  with pytest.raises(ValueError, match=r"no round with 20 labels.*\[10, 15\]"):
    pick_stats.labeled_set(c, 101, 40, np.arange(40) % 10, 10)


@pytest.mark.slow
def test_tiny_run_is_the_loop_round_and_resumes(tmp_path, fsdd_root, monkeypatch):
  c = _tiny()
  (path,) = pick_stats.run(c, tmp_path)
  rec = io.read_json(path)
  assert path.name == "pick_stats_fsdd_seed100_uniform10.json"
  assert list(rec["variants"]) == ["uniform", "kcenter", "bilevel"]
  for name, v in rec["variants"].items():
    d = v["pick_diagnostics"]
    assert d["num_picks"] == c.al.batch_size_per_round == len(v["picks"])
    assert sum(d["pick_class_histogram"]) == c.al.batch_size_per_round
    assert ("proxy_pool_accuracy" in d) == (name == "bilevel")
  assert "selection" in rec["variants"]["bilevel"]
  assert "proxy_logits" not in rec["variants"]["bilevel"]["selection"]

  # The harness's model is the AL loop's round-0 model (same cache file), and the loop picks
  # the same batches with it. Later rounds reuse that model here: only round 0 is compared.
  data = loop.load_data(c)
  labeled = np.asarray(rec["setting"]["labeled_indices"], np.int32)
  assert loop._round0_path(c, data, 100, labeled, tmp_path).exists()
  real_train = loop._train

  def round0_only(config, data, seeds, r, labeled, shared, *args, **kwargs):
    first = {s: idx[: config.al.initial] for s, idx in labeled.items()}
    return real_train(config, data, seeds, 0, first, shared, *args, **kwargs)

  monkeypatch.setattr(loop, "_train", round0_only)
  al = _tiny(seed=100, strategy="uniform,kcenter", **{"al.budget": 15})
  monkeypatch.setattr(ssl_train, "train_many", lambda *a, **k: pytest.fail("retrained"))
  loop.run(al, tmp_path)
  for name in ("uniform", "kcenter"):
    r0 = io.read_json(tmp_path / f"fsdd_{name}_seed100.json")["rounds"][0]
    assert r0["picks"] == rec["variants"][name]["picks"]
    assert r0["pick_diagnostics"] == rec["variants"][name]["pick_diagnostics"]

  # Resume: nothing is recomputed for a finished variant; a new one runs on the cached model.
  before = {k: v["picks"] for k, v in rec["variants"].items()}
  variants = json.dumps(
    {
      "uniform": {"strategy": "uniform"},
      "cg_more": {"strategy": "bilevel", "options": {"cg_steps": 7}},
    }
  )
  pick_stats.run(c, tmp_path, variants=variants)
  again = io.read_json(path)
  assert {k: v["picks"] for k, v in again["variants"].items() if k in before} == before
  assert again["variants"]["cg_more"]["options_used"]["cg_steps"] == 7
  assert again["model"] == rec["model"]

  # Retraining with the batch added (the loop's round-1 key) records the test accuracy.
  monkeypatch.undo()
  pick_stats.run(_tiny(retrain=True), tmp_path, variants='{"uniform": {"strategy": "uniform"}}')
  v = io.read_json(path)["variants"]["uniform"]
  assert v["picks"] == before["uniform"] and 0.0 <= v["retrained_test_accuracy"] <= 1.0
  assert len(list((tmp_path / "models").glob("fsdd_seed100_round1_*.msgpack"))) == 1

  with pytest.raises(ValueError, match="written with another setting"):
    pick_stats.run(_tiny(**{"train.steps": 9}), tmp_path)
