"""experiments.bilevel_evidence: the bilevel strategy's own pipeline on real FSDD (CLI runs)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[2]


def _cli(workdir, *flags):
  cmd = [
    sys.executable,
    "-m",
    "experiments.bilevel_evidence",
    "--config=experiments/configs/bilevel_evidence.py:tiny",
    f"--workdir={workdir}",
    *flags,
  ]
  env = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join([str(_REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
  )
  return subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True, text=True, timeout=1500)


def test_unknown_part_is_named_before_any_data(tmp_path):
  proc = _cli(tmp_path, "--config.parts=first_batch,bogus", "--config.data_root=/nonexistent")
  assert proc.returncode != 0
  assert "config.parts='first_batch,bogus' has unknown entries ['bogus']" in proc.stderr


@pytest.mark.slow
def test_tiny_first_batch_and_curve(tmp_path, fsdd_root):
  proc = _cli(
    tmp_path,
    "--config.parts=first_batch,al_curve",
    "--config.seeds=1",
    f"--config.data_root={fsdd_root.parent}",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  first = json.loads((tmp_path / "first_batch_m8.json").read_text())
  for method in ("bilevel", "uniform", "max_entropy"):
    assert 1 <= first[method]["classes_covered"][0] <= 10
  seed0 = json.loads((tmp_path / "first_batch_m8" / "seed0.json").read_text())
  bilevel = seed0["methods"]["bilevel"]
  assert len(set(bilevel["indices"])) == 10 and not set(bilevel["indices"]) & set(seed0["labeled"])
  assert len(bilevel["cg_residual"]) == 9  # per greedy pick, as the AL loop records them
  curve = json.loads((tmp_path / "al_curve_m8.json").read_text())
  assert curve["bilevel"]["n_labels"] == [10, 20]
  assert curve["pipeline"].startswith("strategies 'bilevel' prepare")
