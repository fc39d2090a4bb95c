"""Result files: a torn write loses at most the round being written; no bare NaN in JSON."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

from bilevel_jax.al import results

_REPO = pathlib.Path(__file__).resolve().parents[2]


def _record():
  return results.new_record(
    dataset="fsdd",
    strategy="uniform",
    seed=0,
    command="cmd",
    config={"mode": "test"},
    train_size=20,
    test_size=5,
    num_classes=3,
    schedule=[3, 5, 7],
    initial_indices=np.array([0, 1, 2]),
  )


def _round(r):
  return {
    "round": r,
    "num_labeled": 3 + 2 * r,
    "labeled_indices": list(range(3 + 2 * r)),
    "test_accuracy": 0.25 * r,
    "picks": [10 + 2 * r, 11 + 2 * r] if r < 2 else None,
    "selection": {"score": [1.5, float(r)]},
  }


def _write_rounds(path, n=3):
  rec = _record()
  for r in range(n):
    rec["rounds"].append(_round(r))
    rec["complete"] = r == 2
    results.save(path, rec)
  return rec


def _complete_rounds(journal: bytes, k: int) -> int | None:
  """Rounds whose lines lie wholly in journal[:k]; None if even the header is torn."""
  ends = [i + 1 for i, byte in enumerate(journal) if byte == ord("\n")]
  done = [e for e in ends if e <= k]
  return None if not done else len(done) - 1


@pytest.fixture
def no_fsync(monkeypatch):
  """Thousands of small writes: durability is not what these tests check."""
  monkeypatch.setattr(os, "fsync", lambda fd: None)


def test_truncated_journal_and_summary_lose_at_most_the_torn_round(tmp_path, no_fsync):
  src = tmp_path / "src" / "fsdd_uniform_seed0.json"
  full = _write_rounds(src)
  journal = results.journal_path(src).read_bytes()
  summary = src.read_bytes()
  path = tmp_path / "t" / src.name
  path.parent.mkdir()
  for k in range(len(journal) + 1):
    path.write_bytes(summary[: len(summary) // 2])  # the summary is torn too
    results.journal_path(path).write_bytes(journal[:k])
    want = _complete_rounds(journal, k)
    if want is None:
      with pytest.raises(ValueError, match="delete it to start this run afresh"):
        results.load_for_resume(path, _record())
      continue
    rec = results.load_for_resume(path, _record())
    assert rec["rounds"] == json.loads(json.dumps(full["rounds"][:want])), k
    assert rec["complete"] == (want == 3)
    # The run goes on from there: the torn tail is dropped, the next round appended after it.
    if want < 3:
      rec["rounds"].append(_round(want))
      results.save(path, rec)
      path.write_bytes(b"{")  # and the summary is lost again
      assert len(results.load(path)["rounds"]) == want + 1, k


def test_truncated_summary_with_its_journal_loses_nothing(tmp_path, no_fsync):
  path = tmp_path / "fsdd_uniform_seed0.json"
  full = _write_rounds(path)
  summary = path.read_bytes()
  for k in range(len(summary)):
    path.write_bytes(summary[:k])
    rec = results.load_for_resume(path, _record())
    assert len(rec["rounds"]) == 3 and rec["complete"], k
    assert rec["rounds"] == json.loads(json.dumps(full["rounds"]))


def test_a_journal_of_another_run_is_replaced(tmp_path):
  path = tmp_path / "fsdd_uniform_seed0.json"
  _write_rounds(path)
  rec = _record()
  rec["started_utc"] = "another run"
  rec["rounds"].append(_round(0))
  results.save(path, rec)
  header, rounds, _ = results.read_journal(path)
  assert header["started_utc"] == "another run" and len(rounds) == 1


def test_nan_is_refused_before_anything_is_written(tmp_path):
  path = tmp_path / "fsdd_uniform_seed0.json"
  rec = _record()
  rec["rounds"].append(dict(_round(0), test_accuracy=float("nan")))
  with pytest.raises(ValueError, match=r"\['rounds'\]\[0\]\['test_accuracy'\] = nan"):
    results.save(path, rec)
  assert not path.exists() and not results.journal_path(path).exists()


def test_non_finite_diagnostics_are_written_as_null(tmp_path):
  path = tmp_path / "fsdd_uniform_seed0.json"
  rec = _record()
  rec["rounds"].append(dict(_round(0), pick_diagnostics={"cg_residual": [0.5, float("inf")]}))
  results.save(path, rec)
  text = path.read_text()
  assert json.loads(text)["rounds"][0]["pick_diagnostics"] == {"cg_residual": [0.5, None]}
  assert "Infinity" not in text and "Infinity" not in results.journal_path(path).read_text()


def test_selection_entry_writes_non_finite_values_as_null():
  out = results.selection_entry({"cg_residual": np.array([1e-9, np.inf, np.nan])})
  assert out == {"cg_residual": [1e-9, None, None]}
  json.dumps(out, allow_nan=False)


def test_committed_results_load_without_a_journal():
  files = sorted((_REPO / "results" / "active_learning").rglob("*_seed*.json"))
  assert files
  for f in files:
    raw = json.loads(f.read_text())
    if results.journal_path(f).exists() or str(raw.get("format", "")).startswith(
      "bilevel_jax.pick_stats"
    ):
      continue  # pick-statistics files share the folder but are not AL records
    assert results.load(f)["rounds"] == raw["rounds"]
