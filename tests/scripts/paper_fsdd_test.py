"""scripts/gpu/paper_fsdd.sh rehearsed on CPU (DRY_RUN, the tiny config): a call cut by its
budget exits 75 with its state packed; the next call restores that state and finishes."""

import os
import pathlib
import subprocess
import sys
import tarfile

import pytest

from bilevel_jax.al import results
from bilevel_jax.utils import io

_REPO = pathlib.Path(__file__).resolve().parents[2]


def _call(tmp, budget, state):
  out = tmp / f"out{budget}"
  out.mkdir()
  env = dict(
    os.environ,
    DRY_RUN="1",
    MODE="tiny",
    PHASES="uniform kcenter",
    MARGIN="0",
    HARD_EXTRA="900",
    STATE=str(state),
    WORK=str(tmp / "work"),
    OUT=str(out),
    PYTHON=sys.executable,
    PYTHONPATH=str(_REPO),
  )
  proc = subprocess.run(
    ["bash", "scripts/gpu/paper_fsdd.sh", str(budget)],
    cwd=_REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=1200,
  )
  return proc, out


def _unpack(out, state):
  parts = sorted(out.glob("state.tar.part-*"))
  assert parts and len(parts) <= 7
  state.mkdir(parents=True, exist_ok=True)
  blob = state.parent / "state.tar"
  blob.write_bytes(b"".join(p.read_bytes() for p in parts))
  with tarfile.open(blob) as tar:
    tar.extractall(state)


@pytest.mark.slow
def test_cut_call_then_resumed_call_completes(tmp_path, fsdd_root):
  state = tmp_path / "state"
  proc, out = _call(tmp_path, 1, state)  # 1 s: spent before the first round
  assert proc.returncode == 75, proc.stdout + proc.stderr
  assert "phase uniform: exit 75" in proc.stdout
  _unpack(out, state)
  proc, out = _call(tmp_path, 900, state)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "phase uniform: exit 0" in proc.stdout and "phase kcenter: exit 0" in proc.stdout
  _unpack(out, tmp_path / "final")
  for strategy in ("uniform", "kcenter"):
    rec = io.read_json(results.result_path(tmp_path / "final", "fsdd", strategy, 0))
    assert rec["complete"], strategy
  assert len(list((tmp_path / "final" / "models").glob("*.msgpack"))) == 1  # the newest only
