"""Fixtures of the AL tests."""

from __future__ import annotations

import pytest

from bilevel_jax.ssl import train as ssl_train


@pytest.fixture
def no_training(monkeypatch):
  """Any training call fails the test: validation must happen before compute."""

  def boom(*args, **kwargs):
    raise AssertionError("training started before the config was validated")

  monkeypatch.setattr(ssl_train, "train_many", boom)
