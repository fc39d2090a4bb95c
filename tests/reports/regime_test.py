"""Gain by pool accuracy (reports/regime.py) against a count by hand."""

import numpy as np
from scipy import stats

from bilevel_jax.reports import regime
from bilevel_jax.utils import io
from tests.reports import cli


def _rec(strategy, seed, accs, pools):
  rounds = [
    {"round": r, "num_labeled": 10 * (r + 1), "test_accuracy": a, "pool_accuracy": p}
    for r, (a, p) in enumerate(zip(accs, pools))
  ]
  return {"strategy": strategy, "seed": seed, "dataset": "fsdd", "rounds": rounds}


def test_points_bins_and_rank_correlation_by_hand():
  recs = [
    _rec("bilevel", 0, [0.3, 0.5, 0.8], [0.4, 0.6, 0.9]),
    _rec("bilevel", 1, [0.3, 0.4, 0.7], [0.3, 0.8, None]),
    _rec("uniform", 0, [0.3, 0.45, 0.7], [0.4, 0.5, 0.7]),
    _rec("uniform", 1, [0.3, 0.5, 0.6], [0.3, 0.5, 0.6]),
  ]
  x, y = regime.gain_points(recs, "bilevel", "uniform")
  # (seed 0, r 0): x .4, y 50-45; (0, 1): .6, 80-70; (1, 0): .3, 40-50; (1, 1): .8, 70-60.
  np.testing.assert_allclose(x, [0.4, 0.6, 0.3, 0.8])
  np.testing.assert_allclose(y, [5.0, 10.0, -10.0, 10.0])
  table = regime.gain_by_accuracy(recs, "bilevel", ["uniform", "kcenter"])
  assert list(table) == ["uniform"]  # no kcenter records: no row
  row = table["uniform"]
  assert row["n"] == 4
  low, mid, high = row["bins"]
  assert (low["n"], low["wins"], low["losses"]) == (2, 1, 1)
  np.testing.assert_allclose(low["mean_gain"], -2.5)
  assert (mid["n"], high["n"]) == (1, 1)
  np.testing.assert_allclose([mid["mean_gain"], high["mean_gain"]], [10.0, 10.0])
  np.testing.assert_allclose(row["spearman_rho"], stats.spearmanr(x, y)[0])
  assert "| Bilevel minus |" in regime.markdown("Bilevel", table)


def test_cli_with_a_variant(tmp_path):
  from tests.reports.report_test import _write_results

  rng = np.random.default_rng(2)
  _write_results(
    tmp_path / "main",
    {"uniform": rng.uniform(0.3, 0.9, (3, 3)), "kcenter": rng.uniform(0.3, 0.9, (3, 3))},
  )
  _write_results(tmp_path / "var", {"bilevel": rng.uniform(0.3, 0.9, (3, 3))})
  for path in (tmp_path / "main").glob("*.json"):  # rounds need the model's pool accuracy
    rec = io.read_json(path)
    for rnd in rec["rounds"]:
      rnd["pool_accuracy"] = 0.2 + 0.3 * rnd["round"]
    io.atomic_write_json(path, rec)
  out = tmp_path / "gain.md"
  proc = cli.run_module(
    "experiments.gain_by_accuracy",
    f"--results={tmp_path / 'main'}",
    f"--variant={tmp_path / 'var'}:bilevel:Exact, sum",
    "--strategy=kcenter",
    "--strategy=Exact, sum",
    f"--out={out}",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = io.read_json(out.with_suffix(".json"))
  assert summary["strategies"]["kcenter"]["uniform"]["n"] == 6  # 3 seeds x rounds 0, 1
  assert summary["strategies"]["Exact, sum"] == {}  # its rounds record no pool accuracy
  bad = cli.run_module(
    "experiments.gain_by_accuracy",
    f"--results={tmp_path / 'main'}",
    "--out=x.md",
    "--strategy=bilevel",
  )
  assert bad.returncode != 0 and "['bilevel'], not in the results" in bad.stderr
