"""The workdir lock: a second process fails at once, naming the holder."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from bilevel_jax.utils import locks

_REPO = pathlib.Path(__file__).resolve().parents[2]

_HOLD = """
import sys, time, pathlib
from bilevel_jax.utils import locks
with locks.workdir_lock(sys.argv[1], command="holder-command"):
  pathlib.Path(sys.argv[2]).write_text("held")
  time.sleep(float(sys.argv[3]))
"""


def hold_in_child(workdir: pathlib.Path, seconds: float = 60.0) -> subprocess.Popen:
  """Starts a process holding `workdir`'s lock; returns once it holds it."""
  ready = workdir.parent / f"{workdir.name}.ready"
  env = dict(os.environ, PYTHONPATH=str(_REPO))
  child = subprocess.Popen(
    [sys.executable, "-c", _HOLD, str(workdir), str(ready), str(seconds)], env=env
  )
  deadline = time.monotonic() + 120
  while not ready.exists():
    if child.poll() is not None or time.monotonic() > deadline:
      child.kill()
      raise AssertionError("the lock-holding child did not start")
    time.sleep(0.05)
  return child


def test_second_process_fails_at_once_naming_the_holder(tmp_path):
  workdir = tmp_path / "work"
  child = hold_in_child(workdir)
  try:
    t0 = time.monotonic()
    with pytest.raises(locks.WorkdirBusyError) as info:
      with locks.workdir_lock(workdir):
        pass
    assert time.monotonic() - t0 < 5  # fails, does not wait
    message = str(info.value)
    assert f"pid {child.pid}" in message
    assert socket.gethostname() in message
    assert "started 20" in message and "holder-command" in message
  finally:
    child.kill()
    child.wait()
  # The holder is gone (killed, no cleanup): the kernel released its lock.
  with locks.workdir_lock(workdir) as path:
    assert locks.holder_info(path)["pid"] == os.getpid()


def test_lock_is_reentrant_within_a_process_and_released_after(tmp_path):
  with locks.workdir_lock(tmp_path) as path:
    with locks.workdir_lock(tmp_path):
      assert locks.holder_info(path)["pid"] == os.getpid()
    assert locks.holder_info(path)["pid"] == os.getpid()  # outer block still holds it
  assert locks.holder_info(path) == {}  # released: names no holder
