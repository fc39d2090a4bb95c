"""experiments.compare_runs: an ablation's strategy against a reference run, seed by seed."""

import numpy as np

from bilevel_jax.utils import io
from tests.reports import cli
from tests.reports.report_test import _write_results


def test_ablation_against_reference_run(tmp_path):
  rng = np.random.default_rng(3)
  ref = _write_results(
    tmp_path / "ref",
    {"uniform": rng.uniform(0.3, 0.9, (3, 3)), "bilevel": rng.uniform(0.3, 0.9, (3, 3))},
  )
  abl = rng.uniform(0.3, 0.9, (2, 3))  # the ablation ran seeds 0 and 1 only
  _write_results(tmp_path / "abl", {"bilevel": abl}, config={"bilevel": {"landmarks": 9}})
  out = tmp_path / "cmp" / "comparison.md"
  proc = cli.run_module(
    "experiments.compare_runs",
    f"--run={tmp_path / 'abl'}",
    "--name=Bilevel m9",
    f"--against={tmp_path / 'ref'}",
    f"--out={out}",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = io.read_json(out.with_suffix(".json"))
  d = 100 * (abl[:, 2] - ref["uniform"][:2, 2])
  cell = summary["paired"]["uniform"]["30"]
  np.testing.assert_allclose(cell["mean_diff"], d.mean())
  assert cell["wins"] + cell["losses"] + cell["ties"] == 2
  assert summary["accuracy_percent"]["Bilevel m9"]["30"]["n"] == 2
  assert "| Bilevel m9 vs | 20 | 30 |" in out.read_text()

  bad = cli.run_module(
    "experiments.compare_runs",
    f"--run={tmp_path / 'abl'}",
    "--strategy=kcenter",
    "--name=x",
    f"--against={tmp_path / 'ref'}",
    f"--out={out}",
  )
  assert bad.returncode != 0 and "has no results of strategy 'kcenter'" in bad.stderr
