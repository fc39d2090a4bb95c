"""Mid-training checkpoints and time budgets: a killed or stopped training resumes bitwise."""

import dataclasses
import itertools
import os
import pathlib
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from bilevel_jax.ssl import train as train_lib
from bilevel_jax.utils import budget
from tests.ssl import standin

_REPO = pathlib.Path(__file__).resolve().parents[2]

# Trains the toy task (tests/ssl/standin.py) for 6 steps in a workdir. With KILL_AT it SIGKILLs
# itself right after step KILL_AT (checkpoints every 2 steps); OUT receives the final state.
_CHILD = """
import os, signal, sys
import jax, numpy as np
from bilevel_jax.ssl import train as train_lib
from tests.ssl import standin
waves, labels = standin.toy_dataset(n=40, num_classes=4)
lab = np.stack([np.concatenate([np.arange(k, 40, 4)[s:s + 2] for k in range(4)])
                for s in range(2)])
tc = train_lib.TrainConfig(method="supervised_aug", steps=6, batch_size=8, depth=10, width=1,
                           log_every=1, checkpoint_every=2, ema_decay=0.9, bn_momentum=0.9,
                           seed_mode="host", seed_threads=1)
kill_at = int(os.environ.get("KILL_AT", "0"))
def cb(step, state):
  if step == kill_at:
    os.kill(os.getpid(), signal.SIGKILL)
res = train_lib.train_many(tc, waves, labels, lab, jax.random.split(jax.random.key(0), 2),
                           num_classes=4, featurize_fn=standin.featurize,
                           augment_featurize_fn=standin.augment_and_featurize,
                           noise=np.ones((1, standin.T), np.float32), progress=False,
                           workdir=sys.argv[1], callback=cb)
leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(res.state))[0]
np.savez(sys.argv[2], **{jax.tree_util.keystr(k): v for k, v in leaves})
print("history", [h["step"] for h in res.history])
"""


def _child(workdir, out, kill_at=None):
  env = dict(os.environ, PYTHONPATH=str(_REPO), KILL_AT=str(kill_at or 0))
  return subprocess.run(
    [sys.executable, "-c", _CHILD, str(workdir), str(out)],
    cwd=_REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_parameters_bitwise(tmp_path):
  killed = _child(tmp_path / "w", tmp_path / "unused.npz", kill_at=3)
  assert killed.returncode == -9, killed.stderr[-3000:]
  saved = sorted(p.name for p in (tmp_path / "w" / "checkpoints").iterdir())
  assert saved == ["2"], saved  # the step-2 checkpoint; step 3 was lost with the process
  resumed = _child(tmp_path / "w", tmp_path / "resumed.npz")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "history [3, 4, 5, 6]" in resumed.stdout  # continued after step 2
  assert sorted(p.name for p in (tmp_path / "w" / "checkpoints").iterdir()) == ["4", "6"]
  full = _child(tmp_path / "full", tmp_path / "full.npz")
  assert full.returncode == 0, full.stderr[-3000:]
  a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "full.npz")
  assert sorted(a.files) == sorted(b.files) and len(a.files) > 10
  for name in a.files:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


KW = dict(
  num_classes=4,
  featurize_fn=standin.featurize,
  augment_featurize_fn=standin.augment_and_featurize,
  noise=np.ones((1, standin.T), np.float32),
  progress=False,
)


def _setup(**overrides):
  waves, labels = standin.toy_dataset(n=40, num_classes=4)
  lab = np.stack(
    [np.concatenate([np.arange(k, 40, 4)[s : s + 1] for k in range(4)]) for s in range(2)]
  )
  base = dict(
    method="mixmatch",
    steps=6,
    batch_size=8,
    depth=10,
    width=1,
    log_every=3,
    checkpoint_every=3,
    rampup_steps=4,
    ema_decay=0.9,
    bn_momentum=0.9,
    seed_mode="host",
    seed_threads=1,
  )
  base.update(overrides)
  return train_lib.TrainConfig(**base), waves, labels, lab, jax.random.split(jax.random.key(2), 2)


def _fake_clock(expire_after_calls):
  """A clock for budget.Deadline(1.0): the deadline passes at the n-th `expired()` check."""
  ticks = itertools.count()
  return lambda: next(ticks) / expire_after_calls


def test_time_budget_checkpoints_then_resumes_to_the_same_state(tmp_path):
  tc, waves, labels, lab, keys = _setup(method="supervised_aug")
  full = train_lib.train_many(tc, waves, labels, lab, keys, **KW)
  # Progress off, budget on: calls of max(1, log_every // 10) = 1 step, one check after each.
  deadline = budget.Deadline(1.0, clock=_fake_clock(2))
  with pytest.raises(budget.TimeBudgetExceeded, match="step 2/6"):
    train_lib.train_many(tc, waves, labels, lab, keys, workdir=tmp_path, deadline=deadline, **KW)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
  resumed = train_lib.train_many(tc, waves, labels, lab, keys, workdir=tmp_path, **KW)
  chex.assert_trees_all_equal(resumed.state, full.state)
  assert [h["step"] for h in resumed.history] == [3, 6]


def test_deadline_rejects_negative_budget():
  with pytest.raises(ValueError, match="--time_budget=-1"):
    budget.Deadline(-1)
  assert not budget.Deadline(None).expired() and budget.Deadline(0).expired()


def test_steps_per_call_matches_one_step_per_call():
  """lax.scan over 4 steps per call (then 2 single steps) against 6 single-step calls."""
  tc, waves, labels, lab, keys = _setup(log_every=6, checkpoint_every=6)
  one = train_lib.train_many(tc, waves, labels, lab, keys, **KW)
  scanned = train_lib.train_many(
    dataclasses.replace(tc, steps_per_call=4), waves, labels, lab, keys, **KW
  )
  np.testing.assert_array_equal(scanned.state.step, [6, 6])
  # XLA may fuse a scan body differently from a lone step: equal up to float32 rounding. Conv
  # biases feeding batch norm are left out: their true gradient is zero, and Adam turns the
  # rounding noise there into lr-sized steps.
  kernels = lambda params: {k: v for k, v in _flat(params).items() if "kernel" in k}
  chex.assert_trees_all_close(
    kernels(scanned.state.params), kernels(one.state.params), rtol=1e-3, atol=1e-4
  )
  np.testing.assert_allclose(
    scanned.history[-1]["train/loss"], one.history[-1]["train/loss"], rtol=1e-4
  )


def _flat(tree):
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_bfloat16_compute_tracks_float32():
  """Four MixMatch steps in bf16: float32 state, parameters within 2e-2 of the float32 run
  (bf16 has 8 mantissa bits, ~4e-3 relative per rounding; Adam's first steps move every
  weight by ~lr = 1e-3, so the runs differ by a fraction of one update per weight)."""
  tc, waves, labels, lab, keys = _setup(steps=4, log_every=4, checkpoint_every=4)
  f32 = train_lib.train_many(tc, waves, labels, lab, keys, **KW)
  bf16 = train_lib.train_many(
    dataclasses.replace(tc, precision="bfloat16"), waves, labels, lab, keys, **KW
  )
  for leaf in jax.tree.leaves(bf16.state):
    assert leaf.dtype in (np.float32, np.int32, np.uint32), leaf.dtype
  diff = jax.tree.map(
    lambda a, b: float(np.max(np.abs(a - b))), bf16.state.params, f32.state.params
  )
  assert 0 < max(jax.tree.leaves(diff)) < 2e-2, diff
  np.testing.assert_allclose(
    bf16.history[-1]["train/loss"], f32.history[-1]["train/loss"], rtol=5e-2
  )


@pytest.mark.slow
def test_bfloat16_short_training_accuracy_matches_float32():
  """150 MixMatch steps on the toy task: bf16 compute reaches float32's test accuracy."""
  from bilevel_jax.ssl import evaluate as eval_lib  # pylint: disable=g-import-not-at-top

  tc, waves, labels, lab, keys = _setup(
    steps=150, log_every=50, checkpoint_every=150, ema_decay=0.95, rampup_steps=50
  )
  accs = {}
  for precision in ("float32", "bfloat16"):
    res = train_lib.train_many(
      dataclasses.replace(tc, precision=precision), waves, labels, lab, keys, **KW
    )
    accs[precision] = [eval_lib.evaluate(c, waves, labels, 4).accuracy for c in res.classifiers]
  assert min(accs["float32"]) > 0.8 and min(accs["bfloat16"]) > 0.8, accs
  assert abs(np.mean(accs["float32"]) - np.mean(accs["bfloat16"])) <= 0.1, accs


def test_saving_writes_no_orbax_info_lines(tmp_path):
  """Orbax logs ~30 INFO lines per save through absl; they would bury the run's own log."""
  import io as _io  # pylint: disable=g-import-not-at-top
  import logging as _logging  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ssl import checkpoint  # pylint: disable=g-import-not-at-top

  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  buf = _io.StringIO()
  handler = _logging.StreamHandler(buf)
  _logging.getLogger("absl").addHandler(handler)
  try:
    ckpt = checkpoint.Checkpoints(tmp_path)
    ckpt.save(1, {"w": np.ones(3, np.float32)})
    ckpt.close()
    _logging.getLogger("absl").warning("kept")
  finally:
    _logging.getLogger("absl").removeHandler(handler)
    absl_logging.set_verbosity(verbosity)
  assert buf.getvalue().splitlines() == ["kept"]
