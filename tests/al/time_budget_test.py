"""AL loop: a time budget stops a training mid-way with a checkpoint; --resume finishes it to the
same picks and accuracies as an uninterrupted run; the CLI exits with status 75."""

from __future__ import annotations

import itertools
import os
import pathlib
import subprocess
import sys

import pytest

from bilevel_jax.al import loop
from bilevel_jax.al import results
from bilevel_jax.utils import budget
from bilevel_jax.utils import io
from experiments.configs import fsdd as fsdd_config

_REPO = pathlib.Path(__file__).resolve().parents[2]


def _tiny():
  c = fsdd_config.get_config("tiny")  # uniform, 8 steps per training, checkpoints every 2
  c.progress = False
  return c


def _rounds(workdir):
  rec = io.read_json(results.result_path(workdir, "fsdd", "uniform", 0))
  return rec["complete"], [(r["picks"], r["test_accuracy"]) for r in rec["rounds"]]


def test_budget_stops_mid_training_and_resume_matches(tmp_path, fsdd_root):
  ticks = itertools.count()
  # expired() is checked before each round and after each training step (progress off, budget
  # on: one-step calls); the 4th check, after step 3 of round 0, finds the budget spent.
  deadline = budget.Deadline(1.0, clock=lambda: next(ticks) / 4)
  with pytest.raises(budget.TimeBudgetExceeded, match="step 3/8"):
    loop.run(_tiny(), tmp_path / "stopped", deadline=deadline)
  saved = list((tmp_path / "stopped" / "checkpoints").glob("train_*/checkpoints/*"))
  assert sorted(p.name for p in saved) == ["2", "3"], saved
  assert not results.result_path(tmp_path / "stopped", "fsdd", "uniform", 0).exists()
  loop.run(_tiny(), tmp_path / "stopped", resume=True)
  loop.run(_tiny(), tmp_path / "clean")
  done, resumed = _rounds(tmp_path / "stopped")
  assert done and resumed == _rounds(tmp_path / "clean")[1]
  # Written rounds no longer need their training checkpoints.
  assert not list((tmp_path / "stopped" / "checkpoints").glob("train_*"))


def test_cli_exits_75_when_the_budget_is_spent(tmp_path, fsdd_root):
  cmd = [
    sys.executable,
    "-m",
    "experiments.active_learning",
    "--config=experiments/configs/fsdd.py:tiny",
    "--config.progress=False",
    "--time_budget=0",
    f"--workdir={tmp_path}",
  ]
  proc = subprocess.run(
    cmd,
    cwd=_REPO,
    env=dict(os.environ, PYTHONPATH=str(_REPO)),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == budget.EXIT_TIME_BUDGET, proc.stderr[-3000:]
  assert "Continue with --resume" in proc.stdout
