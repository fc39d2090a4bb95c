"""Two AL runs in one workdir: the second fails before loading data or training."""

from __future__ import annotations

import pytest

from bilevel_jax.al import loop
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.utils import locks
from experiments.configs import fsdd as fsdd_config
from tests.utils.locks_test import hold_in_child


def test_second_run_in_a_busy_workdir_fails_at_once(tmp_path, monkeypatch):
  def boom(*args, **kwargs):
    raise AssertionError("the second run went on")

  monkeypatch.setattr(loop, "load_data", boom)
  monkeypatch.setattr(ssl_train, "train_many", boom)
  config = fsdd_config.get_config("tiny")
  config.progress = False
  child = hold_in_child(tmp_path)
  try:
    with pytest.raises(locks.WorkdirBusyError, match=f"pid {child.pid}"):
      loop.run(config, tmp_path)
  finally:
    child.kill()
    child.wait()
  assert not (tmp_path / "config.json").exists()
