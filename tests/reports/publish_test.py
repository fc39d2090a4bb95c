"""experiments.publish: a finished run's result files go from runs/ into results/."""

from __future__ import annotations

import pytest

from bilevel_jax.utils import io
from experiments import publish


def _run(tmp_path, complete=True):
  run = tmp_path / "runs" / "x"
  io.atomic_write_json(
    run / "fsdd_uniform_seed0.json",
    {"format": "bilevel_jax.al/1", "complete": complete, "rounds": []},
  )
  io.atomic_write_json(run / "config.json", {"command": "c"})
  io.atomic_write_bytes(run / "report" / "table1.md", b"| a |\n")
  io.atomic_write_bytes(run / "report" / "figure3.png", b"\x89PNG")
  io.atomic_write_bytes(run / "fsdd_uniform_seed0_round0.npz", b"npz")
  io.atomic_write_bytes(run / "models" / "m.json", b"{}")
  io.atomic_write_bytes(run / "logs" / "events.json", b"{}")
  io.atomic_write_bytes(run / "a.json.tmp", b"{")
  return run


def test_copies_results_and_leaves_caches(tmp_path):
  run, dest = _run(tmp_path), tmp_path / "results" / "y"
  written = publish.publish(run, dest)
  got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
  assert got == ["config.json", "fsdd_uniform_seed0.json", "report/figure3.png", "report/table1.md"]
  assert sorted(written) == sorted(dest / g for g in got)
  for name in got:
    assert (dest / name).read_bytes() == (run / name).read_bytes()


def test_unfinished_runs_need_partial(tmp_path):
  run, dest = _run(tmp_path, complete=False), tmp_path / "results" / "y"
  with pytest.raises(ValueError, match=r"unfinished .* fsdd_uniform_seed0.json.*--partial"):
    publish.publish(run, dest)
  assert not dest.exists()
  publish.publish(run, dest, partial=True)
  assert (dest / "fsdd_uniform_seed0.json").exists()


def test_bad_arguments_name_the_flag(tmp_path):
  with pytest.raises(FileNotFoundError, match="--run="):
    publish.publish(tmp_path / "missing", tmp_path / "out")
  run = _run(tmp_path)
  with pytest.raises(ValueError, match="same folder"):
    publish.publish(run, run)
  assert publish.publish(run, tmp_path / "dry", dry_run=True) and not (tmp_path / "dry").exists()
