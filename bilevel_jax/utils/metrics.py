"""Scalar metrics a person can plot: JSON lines plus TensorBoard event files."""

from __future__ import annotations

import json
import pathlib
from typing import Mapping


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` and TensorBoard (`<workdir>/tb`).

  Names look like `al/test_acc` or `train/loss`; values are converted to float.
  """

  def __init__(self, workdir: str | pathlib.Path, tensorboard: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(self.workdir / "metrics.jsonl", "a")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(str(self.workdir / "tb"))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step":
          self._tb.add_scalar(k, v, int(step))

  def flush(self) -> None:
    self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self.flush()
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
