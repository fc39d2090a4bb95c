"""Progress bars share the terminal with logging: no log line glued to a bar, bars move early."""

import logging
import re
import sys

import jax
import numpy as np

from bilevel_jax.ssl import train as train_lib
from bilevel_jax.utils import progress
from tests.ssl import standin

_BAR = re.compile(r"\d+/\d+ \[")  # tqdm's "3/10 [00:01<..." counter
_LOG = re.compile(r"MESSAGE-\d+|step \d+/\d+ loss")


def _segments(text):
  return [s for s in re.split(r"[\r\n]", text) if s.strip()]


def test_log_lines_are_never_glued_to_a_bar(capsys):
  handler = logging.StreamHandler(sys.stderr)  # what absl / basicConfig install
  logger = logging.getLogger("progress_test")
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    with progress.Progress(10, desc="work", file=sys.stderr) as bar:
      for i in range(10):
        bar.update(1)
        logger.info("MESSAGE-%d", i)
  finally:
    logger.removeHandler(handler)
  err = capsys.readouterr().err
  segments = _segments(err)
  assert sum(bool(_LOG.search(s)) for s in segments) == 10
  glued = [s for s in segments if _LOG.search(s) and _BAR.search(s)]
  assert not glued, glued
  assert handler.stream is sys.stderr  # restored after the bar closed


def test_absl_handler_is_redirected_too():
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  absl_logging.use_absl_handler()
  inner = absl_logging.get_absl_handler().python_handler
  before = inner.stream
  with progress.logging_through_bars():
    assert isinstance(inner.stream, progress._TqdmStream)  # pylint: disable=protected-access
  assert inner.stream is before


def test_disabled_progress_logs_each_event_once(caplog):
  caplog.set_level(logging.INFO, logger="bilevel_jax")
  with progress.Progress(4, desc="train", enabled=False) as bar:
    bar.update(2)
    bar.log("step %d/%d", 2, 4)
  assert [r.getMessage() for r in caplog.records] == ["train: step 2/4"]


def test_training_bar_moves_before_the_first_logged_chunk(capsys):
  waves, labels = standin.toy_dataset(n=40, num_classes=4)
  tc = train_lib.TrainConfig(
    method="supervised",
    steps=10,
    batch_size=8,
    depth=10,
    width=1,
    log_every=10,
    checkpoint_every=10,
  )
  train_lib.train(
    tc,
    waves,
    labels,
    np.arange(8),
    jax.random.key(0),
    num_classes=4,
    featurize_fn=standin.featurize,
    augment_featurize_fn=standin.augment_and_featurize,
    progress=True,
  )
  err = capsys.readouterr().err
  assert re.search(r"\b1/10 \[", err), err[-2000:]  # a step-1 update, not only 0 then 10
