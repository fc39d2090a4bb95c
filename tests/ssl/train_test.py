"""Training: input validation, resume-after-kill equality, predict/evaluate shapes.

Uses the small stand-in featurizer in tests/ssl/standin.py ((B, 256) -> (B, 8, 8, 1)) and a
WRN-10-1 so that compiling stays cheap.
"""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.ssl import evaluate as eval_lib
from bilevel_jax.ssl import train as train_lib
from tests.ssl import standin

NUM_CLASSES = 4
KW = dict(
  num_classes=NUM_CLASSES,
  featurize_fn=standin.featurize,
  augment_featurize_fn=standin.augment_and_featurize,
  noise=np.ones((1, standin.T), np.float32),
  progress=False,
)


def _config(**overrides):
  base = dict(
    method="supervised_aug",
    steps=6,
    batch_size=8,
    depth=10,
    width=1,
    log_every=2,
    checkpoint_every=2,
    rampup_steps=4,
    ema_decay=0.9,
    bn_momentum=0.9,
  )
  base.update(overrides)
  return train_lib.TrainConfig(**base)


@pytest.fixture(scope="module")
def toy():
  return standin.toy_dataset(n=40, num_classes=NUM_CLASSES)


def _labeled(num_seeds=2, per_class=2):
  return np.stack(
    [
      np.concatenate([np.arange(k, 40, NUM_CLASSES)[s : s + per_class] for k in range(NUM_CLASSES)])
      for s in range(num_seeds)
    ]
  )


@pytest.mark.parametrize(
  "overrides,labeled,require,match",
  [
    (dict(batch_size=41), None, False, "larger than the training set"),
    (dict(lambda_u=-1.0), None, False, "lambda_u=-1.0"),
    (dict(method="fixmatch"), None, False, "train.method='fixmatch'"),
    (dict(temperature=0.0), None, False, "temperature"),
    (dict(seed_mode="pmap"), None, False, "seed_mode='pmap'"),
    (dict(seed_threads=-1), None, False, "seed_threads=-1"),
    (dict(), np.zeros((2, 0), np.int64), False, "Zero labeled points"),
    (dict(), np.array([[0, 0, 1, 2]]), False, "duplicates"),
    (dict(), np.array([[0, 1, 2, 40]]), False, "must lie in"),
    (dict(), np.array([[0, 4, 8, 1]]), True, "no label for classes \\[2, 3\\]"),
  ],
)
def test_invalid_settings_rejected_before_compiling(toy, overrides, labeled, require, match):
  waves, labels = toy
  labeled = _labeled() if labeled is None else labeled
  keys = jax.random.split(jax.random.key(0), labeled.shape[0])
  with pytest.raises(ValueError, match=match):
    train_lib.train_many(
      _config(**overrides), waves, labels, labeled, keys, require_all_classes=require, **KW
    )


def test_key_count_must_match_labeled_sets(toy):
  waves, labels = toy
  with pytest.raises(ValueError, match="one key per labeled set"):
    train_lib.train_many(
      _config(), waves, labels, _labeled(2), jax.random.split(jax.random.key(0), 3), **KW
    )


class _Killed(Exception):
  pass


@pytest.fixture(scope="module")
def resumed_and_uninterrupted(toy, tmp_path_factory):
  waves, labels = toy
  tc = _config(seed_mode="vmap")  # the accelerator path; "map" is covered below
  lab = _labeled(2)
  keys = jax.random.split(jax.random.key(0), 2)
  full = train_lib.train_many(
    tc, waves, labels, lab, keys, workdir=tmp_path_factory.mktemp("full"), **KW
  )
  workdir = tmp_path_factory.mktemp("killed")

  def kill(step, state):
    if step == 4:
      raise _Killed()

  with pytest.raises(_Killed):
    train_lib.train_many(tc, waves, labels, lab, keys, workdir=workdir, callback=kill, **KW)
  seen = []
  resumed = train_lib.train_many(
    tc,
    waves,
    labels,
    lab,
    keys,
    workdir=workdir,
    callback=lambda step, state: seen.append(step),
    **KW,
  )
  return full, resumed, seen, workdir


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(resumed_and_uninterrupted):
  full, resumed, seen, workdir = resumed_and_uninterrupted
  assert seen == [6]  # restarted from the step-4 checkpoint, not from scratch
  np.testing.assert_array_equal(resumed.state.step, [6, 6])
  chex.assert_trees_all_close(resumed.state.params, full.state.params, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(resumed.state.ema_params, full.state.ema_params, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(resumed.state.opt_state, full.state.opt_state, rtol=1e-6, atol=1e-6)
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4, 6]
  assert np.isfinite(rows[-1]["train/loss"])


@pytest.mark.slow
def test_seeds_differ_and_predict_shapes(toy, resumed_and_uninterrupted):
  waves, labels = toy
  full = resumed_and_uninterrupted[0]
  leaves = jax.tree.leaves(full.state.params)
  assert not np.allclose(leaves[0][0], leaves[0][1])  # different init per seed
  clf = full.classifiers[1]
  p = eval_lib.predict(clf, waves, batch_size=16)
  assert p.probs.shape == (40, NUM_CLASSES) and p.embeddings.shape == (40, 64)
  np.testing.assert_allclose(p.probs.sum(-1), 1.0, rtol=1e-5)
  pa = eval_lib.predict(clf, waves, key=jax.random.key(1), num_augmentations=3, batch_size=16)
  assert pa.probs.shape == (3, 40, NUM_CLASSES)
  assert not np.allclose(pa.probs[0], pa.probs[1])  # independent augmentation draws
  np.testing.assert_allclose(pa.embeddings, p.embeddings, rtol=1e-5, atol=1e-6)
  # aug_embeddings come from the same draws as the augmented logits: the head maps one to the other.
  assert p.aug_embeddings is None and pa.aug_embeddings.shape == (3, 40, 64)
  head = clf.variables["params"]["head"]
  np.testing.assert_allclose(
    pa.aug_embeddings @ head["kernel"] + head["bias"], pa.logits, rtol=1e-4, atol=1e-4
  )
  ev = eval_lib.evaluate(clf, waves, labels, NUM_CLASSES)
  assert ev.per_class_accuracy.shape == (NUM_CLASSES,)
  np.testing.assert_allclose(ev.accuracy, np.mean(p.probs.argmax(-1) == labels))
  with pytest.raises(ValueError, match="needs a PRNG key"):
    eval_lib.predict(clf, waves, num_augmentations=2)


@pytest.mark.slow
def test_mixmatch_step_runs_and_ramps(toy):
  waves, labels = toy
  tc = _config(method="mixmatch", steps=4, log_every=1)
  res = train_lib.train(tc, waves, labels, _labeled(1)[0], jax.random.key(3), **KW)
  weights = [h["train/weight_u"] for h in res.history]
  np.testing.assert_allclose(weights, [0.0, 2.5, 5.0, 7.5])
  assert all(np.isfinite(h["train/loss"]) and h["train/loss_u"] >= 0 for h in res.history)


def _kernels(params):
  """Conv/dense kernels only: every conv bias here feeds a batch norm, so its true gradient is
  zero and Adam turns float noise into lr-sized steps that differ between programs."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {jax.tree_util.keystr(k): v for k, v in flat if "kernel" in jax.tree_util.keystr(k)}


@pytest.mark.slow
def test_host_seed_threads_change_nothing(toy):
  """Seeds stepped from 3 threads end bitwise where one thread (in seed order) ends (the
  threading is the same for every method; supervised_aug compiles fastest with augmentation)."""
  waves, labels = toy
  tc = _config(method="supervised_aug", steps=4, log_every=2, seed_mode="host")
  lab = _labeled(3, per_class=1)
  keys = jax.random.split(jax.random.key(7), 3)
  one = train_lib.train_many(
    dataclasses.replace(tc, seed_threads=1), waves, labels, lab, keys, **KW
  )
  three = train_lib.train_many(
    dataclasses.replace(tc, seed_threads=3), waves, labels, lab, keys, **KW
  )
  chex.assert_trees_all_equal(three.state, one.state)
  assert [h["train/loss"] for h in three.history] == [h["train/loss"] for h in one.history]


def test_host_threads_train_under_the_callers_config_context():
  """A `with jax.<context>(...)` setting is thread-local: seeds must not step in worker threads
  that do not see it (they would train, and end, differently from seed_threads=1)."""

  def step(state, data, labeled_idx):
    del data, labeled_idx
    bump = 2.0 if jax.config.jax_default_matmul_precision == "highest" else 1.0  # trace time
    return state + bump, {"loss": state.sum()}

  run = train_lib.make_run_steps(step, "host", seed_threads=3)
  assert train_lib.config_reaches_threads()
  with jax.default_matmul_precision("highest"):
    assert not train_lib.config_reaches_threads()
    state, _ = run(jnp.zeros((3, 2)), None, jnp.zeros((3, 1), jnp.int32), 2)
  np.testing.assert_array_equal(state, np.full((3, 2), 4.0))


def test_seed_thread_count():
  assert train_lib.seed_thread_count(4, 2) == 2  # never more threads than seeds
  assert train_lib.seed_thread_count(1, 6) == 1
  assert 1 <= train_lib.seed_thread_count(0, 6) <= 6


@pytest.mark.slow
def test_vmap_map_host_and_sequential_agree(toy):
  waves, labels = toy
  tc = _config(method="mixmatch", steps=4, log_every=2)
  lab = _labeled(2, per_class=1)
  keys = jax.random.split(jax.random.key(5), 2)
  vm = train_lib.train_many(
    dataclasses.replace(tc, seed_mode="vmap"), waves, labels, lab, keys, **KW
  )
  mp = train_lib.train_many(
    dataclasses.replace(tc, seed_mode="map"), waves, labels, lab, keys, **KW
  )
  host = train_lib.train_many(
    dataclasses.replace(tc, seed_mode="host"), waves, labels, lab, keys, **KW
  )
  vh = train_lib.train_many(
    dataclasses.replace(tc, seed_mode="vmap_host"), waves, labels, lab, keys, **KW
  )
  seq = train_lib.train_many(tc, waves, labels, lab, keys, vmapped=False, **KW)
  for other in (vm, mp, host, vh):
    chex.assert_trees_all_close(
      _kernels(other.state.params), _kernels(seq.state.params), rtol=1e-2, atol=1e-3
    )


@pytest.mark.slow
def test_mixmatch_learns_toy_task(toy):
  waves, labels = toy
  tc = _config(method="mixmatch", steps=150, log_every=50, ema_decay=0.95, rampup_steps=50)
  res = train_lib.train_many(
    tc, waves, labels, _labeled(2, per_class=1), jax.random.split(jax.random.key(5), 2), **KW
  )
  accs = [eval_lib.evaluate(c, waves, labels, NUM_CLASSES).accuracy for c in res.classifiers]
  assert min(accs) > 0.8, accs
