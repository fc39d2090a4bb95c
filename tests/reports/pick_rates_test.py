"""Pick-rate figure: values from `pick_diagnostics` (or the older fields, flagged), rounds with
neither skipped, and a report of files without any of them unchanged (no figure)."""

import pathlib

import numpy as np
import pytest

from bilevel_jax import reports
from bilevel_jax.al import results
from bilevel_jax.reports import pick_rates
from bilevel_jax.reports import tables
from bilevel_jax.utils import io


def _record(strategy, seed, rounds):
  rec = results.new_record(
    dataset="fsdd",
    strategy=strategy,
    seed=seed,
    command="test",
    config={"strategy": strategy, "seed": seed},
    train_size=100,
    test_size=30,
    num_classes=10,
    schedule=[10, 20, 30],
    initial_indices=np.arange(10),
  )
  rec["rounds"] = rounds
  rec["complete"] = True
  return rec


def _round(n, acc=0.5, diag=None, old=None):
  r = {"round": n // 10 - 1, "num_labeled": n, "test_accuracy": acc, "picks": None}
  if old is not None:  # (picks_misclassified, number of picks, pool_accuracy)
    r.update(picks=list(range(old[1])), picks_misclassified=old[0], pool_accuracy=old[2])
  if diag is not None:  # (pick rate, pool error rate)
    r["pick_diagnostics"] = {"pick_misclassified_rate": diag[0], "pool_error_rate": diag[1]}
  return r


def test_collect_means_over_seeds_and_flags_older_files():
  recs = [
    _record(
      "bilevel",
      0,
      [
        _round(10, diag=(0.8, 0.5), old=(8, 10, 0.1)),  # new block wins
        _round(20, old=(3, 10, 0.6)),
        _round(30),
      ],
    ),
    _record("bilevel", 1, [_round(10, diag=(0.4, 0.4)), _round(20, diag=(0.2, 0.0)), _round(30)]),
    _record("uniform", 0, [_round(10), _round(20), _round(30)]),  # nothing to plot
  ]
  got = pick_rates.collect(recs)
  assert list(got) == ["bilevel"]
  assert sorted(got["bilevel"]) == [10, 20]  # round 30 (no batch) is skipped
  c10, c20 = got["bilevel"][10], got["bilevel"][20]
  assert c10["pick_rate"] == pytest.approx(0.6) and c10["pool_error_rate"] == pytest.approx(0.45)
  assert c10["ratio"] == pytest.approx((0.8 / 0.5 + 1.0) / 2)
  assert (c10["seeds"], c10["approximate"]) == (2, 0)
  assert c20["pick_rate"] == pytest.approx((0.3 + 0.2) / 2)
  assert c20["pool_error_rate"] == pytest.approx((0.4 + 0.0) / 2)
  assert c20["ratio"] == pytest.approx(0.3 / 0.4)  # a zero pool error rate has no ratio
  assert c20["approximate"] == 1


def test_report_without_pick_fields_has_no_figure(tmp_path):
  src = tmp_path / "res"
  for seed in range(2):
    results.save(
      results.result_path(src, "fsdd", "uniform", seed),
      _record("uniform", seed, [_round(10), _round(20), _round(30)]),
    )
  out = reports.write_report([src], tmp_path / "report", with_figure2=False)
  assert "pick_rates" not in out and not (tmp_path / "report" / "pick_rates.png").exists()
  results.save(
    results.result_path(src, "fsdd", "bilevel", 0),
    _record("bilevel", 0, [_round(10, diag=(0.5, 0.25)), _round(20), _round(30)]),
  )
  out = reports.write_report([src], tmp_path / "report2", with_figure2=False)
  assert pathlib.Path(out["pick_rates"]).stat().st_size > 0
  saved = io.read_json(tmp_path / "report2" / "pick_rates.json")["strategies"]
  assert saved == {
    "bilevel": {
      "10": {"pick_rate": 0.5, "pool_error_rate": 0.25, "ratio": 2.0, "seeds": 1, "approximate": 0}
    }
  }


def test_committed_tables_are_unchanged(tmp_path):
  """The committed fsdd_cpu report's tables are byte-identical when regenerated."""
  src = pathlib.Path(__file__).resolve().parents[2] / "results/active_learning/fsdd_cpu"
  if not (src / "report" / "table1.md").exists():
    pytest.skip("no committed fsdd_cpu report")
  repo = src.parents[2]
  recorded = io.read_json(src / "report" / "table1.json").get("variants", [])
  variants = [tables.Variant(repo / path, strategy, name) for path, strategy, name in recorded]
  out = reports.write_report([src], tmp_path, with_figure2=False, variants=variants)
  for name in ("table1.md", "table1.tex", "table_rounds.tex", "paired.md"):
    assert (tmp_path / name).read_bytes() == (src / "report" / name).read_bytes(), name
  assert "pick_rates" in out  # older files: their picks_misclassified / pool_accuracy fields
