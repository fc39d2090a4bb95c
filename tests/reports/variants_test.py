"""Variant rows (a strategy of another run under its own name) in Table 1 and paired.md."""

import numpy as np
import pytest

from bilevel_jax import reports
from bilevel_jax.reports import tables
from bilevel_jax.utils import io
from tests.reports import cli
from tests.reports.report_test import _write_results


def _runs(tmp_path):
  rng = np.random.default_rng(7)
  main = _write_results(
    tmp_path / "main",
    {"uniform": rng.uniform(0.3, 0.9, (3, 3)), "bilevel": rng.uniform(0.3, 0.9, (3, 3))},
  )
  var = rng.uniform(0.3, 0.9, (2, 3))  # the variant has seeds 0 and 1 so far
  _write_results(tmp_path / "var", {"bilevel": var})
  return main, var


def test_variant_rows_and_paired_sections_match_numpy(tmp_path):
  main, var = _runs(tmp_path)
  variant = tables.Variant(tmp_path / "var", "bilevel", "Bilevel exact")
  out = reports.write_report(
    [tmp_path / "main"], tmp_path / "report", with_figure2=False, variants=[variant]
  )
  assert "| Bilevel exact | " in out["table_markdown"]
  summary = io.read_json(tmp_path / "report" / "table1.json")
  cell = summary["accuracy_percent"]["Bilevel exact"]["30"]
  np.testing.assert_allclose(cell["mean"], 100 * var[:, 2].mean())
  assert cell["n"] == 2
  # The committed bilevel keeps its own row and its own section, unchanged by the variant.
  np.testing.assert_allclose(
    summary["accuracy_percent"]["bilevel"]["30"]["mean"], 100 * main["bilevel"][:, 2].mean()
  )
  assert set(summary["paired"]["vs"]) == {"uniform", "Bilevel exact"}
  vs = summary["paired_variants"]["Bilevel exact"]
  assert set(vs) == {"uniform", "bilevel"}
  for base in ("uniform", "bilevel"):
    d = 100 * (var[:, 1:] - main[base][:2, 1:])
    pooled = vs[base]["after_first"]
    np.testing.assert_allclose(pooled["mean_diff"], d.mean())
    assert (pooled["wins"], pooled["losses"]) == (int((d > 0).sum()), int((d < 0).sum()))
  paired = (tmp_path / "report" / "paired.md").read_text()
  assert "| Bilevel vs |" in paired and "| Bilevel exact vs |" in paired


def test_variant_errors_name_the_problem(tmp_path):
  _runs(tmp_path)
  main = tables.load_results([tmp_path / "main"])
  with pytest.raises(ValueError, match="already a strategy"):
    tables.with_variants(main, [tables.Variant(tmp_path / "var", "bilevel", "uniform")])
  with pytest.raises(ValueError, match="no results of strategy 'kcenter'"):
    tables.with_variants(main, [tables.Variant(tmp_path / "var", "kcenter", "k")])
  assert tables.parse_variant("a/b:bilevel:Name: with colon") == tables.Variant(
    "a/b", "bilevel", "Name: with colon"
  )
  with pytest.raises(ValueError, match="PATH:STRATEGY:NAME"):
    tables.parse_variant("a/b:bilevel")


def test_report_flag(tmp_path):
  _runs(tmp_path)
  results = f"--results={tmp_path / 'main'}"
  ok = cli.run_module(
    "experiments.report",
    results,
    f"--out={tmp_path / 'r'}",
    f"--variant={tmp_path / 'var'}:bilevel:Bilevel exact",
  )
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert "| Bilevel exact |" in (tmp_path / "r" / "table1.md").read_text()
  bad = cli.run_module(
    "experiments.report", results, f"--out={tmp_path / 'r2'}", "--variant=only_a_path"
  )
  assert bad.returncode != 0 and "--variant='only_a_path'" in bad.stderr
  assert not (tmp_path / "r2").exists()
