"""Pick diagnostics: `round_entry` against plain-Python counts, and in every round of a tiny AL
run against counts made by hand from the round's recorded predictions and picks."""

from __future__ import annotations

import numpy as np
import pytest

from bilevel_jax import strategies
from bilevel_jax.al import diagnostics
from bilevel_jax.al import loop
from bilevel_jax.al import outputs as outputs_lib
from bilevel_jax.utils import io
from experiments.configs import fsdd as fsdd_config


def _by_hand(probs, labels, labeled, picks, proxy_logits=None, num_greedy=0):
  """Counts with Python loops over points (no vectorized code shared with the module)."""
  n, c = len(labels), len(probs[0])
  argmax = lambda row: max(range(len(row)), key=lambda j: (row[j], -j))
  pred = [argmax(probs[i]) for i in range(n)]
  labeled = set(int(i) for i in labeled)
  pool = [i for i in range(n) if i not in labeled]
  wrong_picks = sum(1 for i in picks if pred[i] != labels[i])
  pool_errors = sum(1 for i in pool if pred[i] != labels[i])
  hist, pred_hist = [0] * c, [0] * c
  for i in picks:
    hist[labels[i]] += 1
    pred_hist[pred[i]] += 1
  out = {
    "num_picks": len(picks),
    "picks_misclassified": wrong_picks,
    "pick_misclassified_rate": wrong_picks / len(picks),
    "pool_size": len(pool),
    "pool_errors": pool_errors,
    "pool_error_rate": pool_errors / len(pool),
    "pick_class_histogram": hist,
    "pick_prediction_histogram": pred_hist,
  }
  if num_greedy:
    g = sum(1 for i in picks[:num_greedy] if pred[i] != labels[i])
    out["greedy"] = {
      "num_picks": num_greedy,
      "picks_misclassified": g,
      "pick_misclassified_rate": g / num_greedy,
    }
  if proxy_logits is not None:
    proxy = [argmax(proxy_logits[i]) for i in range(n)]
    out["proxy_pool_accuracy"] = sum(1 for i in pool if proxy[i] == labels[i]) / len(pool)
    out["proxy_pseudo_agreement"] = sum(1 for i in pool if proxy[i] == pred[i]) / len(pool)
  return out


def _check(got, want):
  for k, v in want.items():
    assert got[k] == pytest.approx(v), k
  assert got["misclassified_ratio"] == pytest.approx(
    want["pick_misclassified_rate"] / want["pool_error_rate"]
  )


def test_round_entry_matches_counts_by_hand():
  rng = np.random.default_rng(0)
  n, c = 60, 4
  probs = rng.dirichlet(np.ones(c), n)
  labels = rng.integers(0, c, n)
  labeled = rng.permutation(n)[:8]
  rest = np.setdiff1d(np.arange(n), labeled)
  picks = rng.permutation(rest)[:7]
  logits = rng.normal(size=(n, c))
  diag = {
    "score": np.arange(6.0),
    "cg_residual": np.array([0.5, 1e-9, 2, 3, 4, 5]),
    "inner_grad_norm": np.full(6, 1e-3),
  }
  got = diagnostics.round_entry(
    probs, labels, labeled, picks, proxy_logits=logits, diagnostics=diag
  )
  _check(
    got,
    _by_hand(
      probs.tolist(), labels.tolist(), labeled, picks.tolist(), logits.tolist(), num_greedy=6
    ),
  )
  assert got["ihvp_residual"] == [0.5, 1e-9, 2, 3, 4, 5]
  assert got["inner_grad_norm"] == [1e-3] * 6
  # Without a proxy or per-pick values those fields are absent, not made up.
  plain = diagnostics.round_entry(probs, labels, labeled, picks)
  assert not {"proxy_pool_accuracy", "greedy", "ihvp_residual", "inner_grad_norm"} & set(plain)
  # A model without pool errors has no ratio.
  perfect = np.eye(c)[labels]
  assert diagnostics.round_entry(perfect, labels, labeled, picks)["misclassified_ratio"] is None


def test_split_proxy_leaves_the_input_alone():
  diag = {"score": np.zeros(3), diagnostics.PROXY_LOGITS: np.zeros((5, 2))}
  rest, proxy = diagnostics.split_proxy(diag)
  assert sorted(rest) == ["score"] and proxy.shape == (5, 2)
  assert diagnostics.PROXY_LOGITS in diag
  assert diagnostics.split_proxy(None) == ({}, None)


@pytest.mark.slow
def test_every_round_of_a_tiny_run_records_pick_diagnostics(tmp_path, fsdd_root, monkeypatch):
  """kcenter and bilevel at tiny scale: the recorded fields equal counts by hand from the
  predictions, proxy logits and picks of each round (recorded here by wrapping the loop's
  calls)."""
  seen = {"probs": [], "proxy": []}
  real_outputs, real_select = outputs_lib.model_outputs, strategies.select_with_diagnostics

  def outputs(*args, **kwargs):
    out = real_outputs(*args, **kwargs)
    seen["probs"].append(np.asarray(out.probs))
    return out

  def select(*args, **kwargs):
    picks, diag = real_select(*args, **kwargs)
    seen["proxy"].append(
      None if diagnostics.PROXY_LOGITS not in diag else np.asarray(diag[diagnostics.PROXY_LOGITS])
    )
    return picks, diag

  monkeypatch.setattr(outputs_lib, "model_outputs", outputs)
  monkeypatch.setattr(strategies, "select_with_diagnostics", select)

  c = fsdd_config.get_config("tiny")
  c.progress = False
  c.strategy = "kcenter,bilevel"
  c.al.budget = 20  # two selection rounds per strategy
  loop.run(c, tmp_path)
  data = loop.load_data(c)
  labels = data.train_labels.tolist()
  k = 0
  for name in ("kcenter", "bilevel"):
    rec = io.read_json(tmp_path / f"fsdd_{name}_seed0.json")
    for r in rec["rounds"][:-1]:
      probs, proxy = seen["probs"][k], seen["proxy"][k]
      k += 1
      got = r["pick_diagnostics"]
      num_greedy = len(r["selection"]["score"]) if "selection" in r else 0
      want = _by_hand(
        probs.tolist(),
        labels,
        r["labeled_indices"],
        r["picks"],
        None if proxy is None else proxy.tolist(),
        num_greedy=num_greedy,
      )
      _check(got, want)
      assert got["picks_misclassified"] == r["picks_misclassified"]
      if name == "bilevel":
        assert proxy is not None
        b = c.al.batch_size_per_round
        assert num_greedy == b - round(c.bilevel.uniform_fraction * b)
        assert got["ihvp_residual"] == r["selection"]["cg_residual"]
        assert diagnostics.PROXY_LOGITS not in r["selection"]
      else:
        assert proxy is None and "proxy_pool_accuracy" not in got and "greedy" not in got
    assert "pick_diagnostics" not in rec["rounds"][-1]  # no batch after the last round
  assert k == len(seen["probs"]) == 4
