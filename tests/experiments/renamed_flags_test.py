"""Renamed config entries on the command line: refused before anything runs, naming the new
entry (experiments.configs.parse_flags); result files with the old names still resume
(tests/al/results_test.py)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from bilevel_jax.al import pick_stats_spec
from experiments import configs
from experiments.configs import pick_stats as pick_stats_config

_REPO = pathlib.Path(__file__).resolve().parents[2]


def test_old_overrides_name_the_new_entries():
  argv = [
    "prog",
    "--config=experiments/configs/fsdd.py:tiny",
    "--config.predict_batch=128",
    "--config.bilevel.batch_size",
    "16",
    "--config.bilevel_ssl.kernel_batch=8",
    "--config.al.batch=5",
    "--config.train.batch_size=8",  # not renamed: the MixMatch minibatch
    "--config.bilevel.inner_batch_size=16",
  ]
  messages = configs.renamed_flags(argv)
  assert [m.split(" (")[0] for m in messages] == [
    "--config.predict_batch was renamed --config.predict_chunk",
    "--config.bilevel.batch_size was renamed --config.bilevel.inner_batch_size",
    "--config.bilevel_ssl.kernel_batch was renamed --config.bilevel_ssl.kernel_chunk",
    "--config.al.batch was renamed --config.al.batch_size_per_round",
  ]
  assert configs.renamed_flags(["prog", "--", "--config.predict_batch=1"]) == []


def test_the_cli_refuses_an_old_flag_before_making_the_workdir(tmp_path):
  workdir = tmp_path / "run"
  env = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join([str(_REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
  )
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.active_learning",
      "--config=experiments/configs/fsdd.py:tiny",
      "--config.bilevel.kernel_batch=8",
      f"--workdir={workdir}",
    ],
    cwd=_REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "--config.bilevel.kernel_batch was renamed --config.bilevel.kernel_chunk" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()


def test_a_variant_overriding_an_old_block_entry_names_the_new_one():
  c = pick_stats_config.get_config("tiny")
  variants = pick_stats_spec.variant_specs(
    {"small": {"strategy": "bilevel", "block": {"batch_size": 8}}}
  )
  with pytest.raises(
    ValueError, match="'batch_size' is not a config.bilevel entry.*renamed 'inner_batch_size'"
  ):
    pick_stats_spec.variant_config(c, variants["small"])
  ok = pick_stats_spec.variant_specs(
    {"small": {"strategy": "bilevel", "block": {"inner_batch_size": 8}}}
  )
  assert pick_stats_spec.variant_config(c, ok["small"]).bilevel.inner_batch_size == 8
