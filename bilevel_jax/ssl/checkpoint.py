"""Mid-training checkpoints: Orbax, written atomically (temporary folder, then rename), the
last two kept, under `<workdir>/checkpoints/<step>/`.

A training with a workdir saves every `checkpoint_every` steps, at its end, and when its time
budget runs out; a restarted training restores the newest one and continues to the same numbers
as an uninterrupted run (each step's randomness depends on the step number only).
`run_dir` names the workdir of one training inside an experiment's workdir by a hash of
everything the training depends on, so a resumed experiment finds it again.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
from typing import Any

import logging

import jax
import numpy as np


class _QuietOrbax(logging.Filter):
  """Drops orbax's INFO/DEBUG records (~30 lines per save through absl's logger) so a
  training's progress and the run's own log stay readable; its warnings and errors pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def _quiet_orbax() -> None:
  logger = logging.getLogger("absl")
  if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
    logger.addFilter(_QuietOrbax())


class Checkpoints:
  """Save/restore of a training state pytree in `workdir/checkpoints` (no-op without workdir)."""

  def __init__(self, workdir: str | pathlib.Path | None):
    self._manager = None
    if workdir is not None:
      import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

      _quiet_orbax()
      options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
      self._manager = ocp.CheckpointManager(
        (pathlib.Path(workdir) / "checkpoints").absolute(), options=options
      )

  def restore(self, state: Any) -> Any:
    """The newest saved state (shapes and dtypes of `state`), or `state` when none is saved."""
    if self._manager is None or self._manager.latest_step() is None:
      return state
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self._manager.restore(
      self._manager.latest_step(), args=ocp.args.StandardRestore(abstract)
    )

  def save(self, step: int, state: Any) -> None:
    if self._manager is None or self._manager.latest_step() == step:
      return
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()


def run_dir(root: str | pathlib.Path, **spec: Any) -> pathlib.Path:
  """root/train_<sha1[:16] of spec>: spec holds JSON-able values and arrays."""
  blob = json.dumps(
    {
      k: np.asarray(v).tolist() if isinstance(v, (np.ndarray, jax.Array)) else v
      for k, v in sorted(spec.items())
    },
    sort_keys=True,
    default=str,
  )
  return pathlib.Path(root) / f"train_{hashlib.sha1(blob.encode()).hexdigest()[:16]}"


def remove(path: str | pathlib.Path) -> None:
  """Deletes a finished training's folder (its result has been written elsewhere)."""
  shutil.rmtree(path, ignore_errors=True)
