"""AL loop: invalid configs fail before any compute; a killed run resumes to the same picks."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from bilevel_jax.al import loop
from bilevel_jax.al import results
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.utils import io
from experiments.configs import fsdd as fsdd_config
from tests.al import configs

_REPO = pathlib.Path(__file__).resolve().parents[2]


def _zero_data():
  """A 20-clip, 10-class stand-in for loop.Data (zeros; for bookkeeping tests)."""
  return loop.Data(
    "fsdd",
    10,
    np.zeros((20, 4), np.float32),
    np.arange(20) % 10,
    np.zeros((2, 4), np.float32),
    np.zeros(2, np.int32),
    np.zeros((1, 8)),
  )


def _tiny(**overrides):
  return configs.with_overrides(fsdd_config.get_config("tiny"), overrides)


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(strategy="nope"), r"unknown strategy \['nope'\]"),
    (dict(strategy="uniform,uniform"), "twice"),
    (dict(**{"al.budget": 5}), r"al.budget=5 is smaller than the initial pool"),
    (dict(**{"al.batch_size_per_round": 4}), "not a multiple"),
    (dict(seed=-2), "config.seed=-2"),
    (dict(**{"train.depth_typo": 3}), "Unknown training config keys"),
    (dict(strategy="bilevel", **{"bilevel.kernel": "rbf"}), r"config.bilevel.kernel='rbf'"),
    (dict(strategy="uniform,bilevel", **{"bilevel.landmarks": 0}), "config.bilevel.landmarks=0"),
  ],
)
def test_invalid_config_fails_before_data(tmp_path, no_training, overrides, message):
  with pytest.raises(ValueError, match=message):
    loop.run(_tiny(**overrides), tmp_path)
  assert not any(tmp_path.iterdir())  # nothing written


def test_missing_dataset_fails_clearly(tmp_path, no_training):
  empty = tmp_path / "data"
  empty.mkdir()
  with pytest.raises(ValueError, match=r"config.dataset='fsdd'.*cannot be loaded.*No FSDD"):
    loop.run(_tiny(data_root=str(empty)), tmp_path / "work")


def test_budget_larger_than_pool_fails(tmp_path, fsdd_root, no_training):
  with pytest.raises(ValueError, match="larger than the training set"):
    loop.run(_tiny(**{"al.budget": 310, "al.batch_size_per_round": 300}), tmp_path)


def test_subset_larger_than_the_split_fails(tmp_path, fsdd_root, no_training):
  with pytest.raises(ValueError, match=r"config.subset.train=100000; expected 0 \(all clips\)"):
    loop.run(_tiny(**{"subset.train": 100000}), tmp_path)


def test_initial_pool_must_cover_classes(tmp_path, fsdd_root, no_training):
  with pytest.raises(ValueError, match="cannot cover the 10 classes"):
    loop.run(_tiny(**{"al.initial": 5, "al.budget": 20}), tmp_path)


def test_existing_results_need_resume(tmp_path, no_training):
  io.atomic_write_json(results.result_path(tmp_path, "fsdd", "uniform", 0), {})
  with pytest.raises(FileExistsError, match="--resume"):
    loop.run(_tiny(), tmp_path)


def _cli(workdir, kill_after_round=None, resume=False):
  """The AL CLI in a subprocess; with kill_after_round=k, SIGKILLed once round k is saved."""
  entry = (
    ["-m", "experiments.active_learning"]
    if kill_after_round is None
    else [str(pathlib.Path(__file__).with_name("kill_after_round.py")), str(kill_after_round)]
  )
  cmd = [
    sys.executable,
    *entry,
    "--config=experiments/configs/fsdd.py:tiny",
    "--config.strategy=uniform,kcenter",
    "--config.progress=False",
    f"--workdir={workdir}",
  ] + (["--resume"] if resume else [])
  env = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join([str(_REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
  )
  return subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True, text=True, timeout=600)


def _picks(workdir, strategy):
  rec = io.read_json(results.result_path(workdir, "fsdd", strategy, 0))
  return rec, [r["picks"] for r in rec["rounds"]], [r["test_accuracy"] for r in rec["rounds"]]


class _Crash(Exception):
  pass


def test_crashed_run_resumes_to_the_same_selections(tmp_path, fsdd_root, monkeypatch):
  """In-process variant (fast): the run dies after round 0 is written, then resumes."""
  c = _tiny(strategy="uniform,max_entropy")

  save = results.save

  def crash_after_round_0(path, record):
    save(path, record)
    if record["rounds"][-1]["round"] == 0:
      raise _Crash()

  monkeypatch.setattr(results, "save", crash_after_round_0)
  with pytest.raises(_Crash):
    loop.run(c, tmp_path / "crashed")
  monkeypatch.setattr(results, "save", save)
  rec, _, _ = _picks(tmp_path / "crashed", "uniform")
  assert len(rec["rounds"]) == 1
  loop.run(c, tmp_path / "crashed", resume=True)
  loop.run(c, tmp_path / "clean")
  for strategy in ("uniform", "max_entropy"):
    rec_a, picks_a, acc_a = _picks(tmp_path / "crashed", strategy)
    _, picks_b, acc_b = _picks(tmp_path / "clean", strategy)
    assert rec_a["complete"] and picks_a == picks_b and acc_a == acc_b
    for r in rec_a["rounds"][:-1]:
      assert len(set(r["picks"]) | set(r["labeled_indices"])) == len(r["labeled_indices"]) + 5
  # Complete files are skipped on resume.
  before = (tmp_path / "clean" / "fsdd_uniform_seed0.json").read_text()
  loop.run(c, tmp_path / "clean", resume=True)
  assert (tmp_path / "clean" / "fsdd_uniform_seed0.json").read_text() == before


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_selections(tmp_path, fsdd_root):
  """SIGKILL right after round 1 of the first strategy, resume, compare with a clean run."""
  killed = tmp_path / "killed"
  proc = _cli(killed, kill_after_round=1)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  rec, picks, _ = _picks(killed, "uniform")
  assert len(rec["rounds"]) == 2 and not rec["complete"]  # rounds 0 and 1 survived the kill
  assert not results.result_path(killed, "fsdd", "kcenter", 0).exists()

  proc = _cli(killed, resume=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  clean = tmp_path / "clean"
  proc = _cli(clean)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for strategy in ("uniform", "kcenter"):
    rec_a, picks_a, acc_a = _picks(killed, strategy)
    rec_b, picks_b, acc_b = _picks(clean, strategy)
    assert rec_a["complete"] and rec_b["complete"]
    assert picks_a == picks_b
    np.testing.assert_allclose(acc_a, acc_b)
    assert [len(r["labeled_indices"]) for r in rec_a["rounds"]] == rec_a["schedule"]
  # Round 0 is shared by both strategies of a seed (same initial pool and model).
  assert (
    _picks(clean, "uniform")[0]["initial_indices"] == _picks(clean, "kcenter")[0]["initial_indices"]
  )


@pytest.mark.slow
def test_cli_ends_with_the_tables_and_figure(tmp_path, fsdd_root):
  """`config.report`: Table 1 at the final budget, every round, bilevel seed by seed, Figure 3."""
  cmd = [
    sys.executable,
    "-m",
    "experiments.active_learning",
    "--config=experiments/configs/fsdd.py:tiny",
    "--config.strategy=uniform,bilevel",
    "--config.progress=False",
    "--config.report=True",
    f"--workdir={tmp_path}",
  ]
  proc = subprocess.run(cmd, cwd=_REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert "| method | fsdd @ 20 labels | seeds |" in out
  assert "Every round:" in out and "| Bilevel | " in out
  assert "| Bilevel vs | 15 | 20 |" in out and "| Uniform | " in out
  assert (tmp_path / "report" / "figure3.png").exists()
  assert (tmp_path / "report" / "paired.md").exists()


def test_resume_rejects_a_different_config(tmp_path):
  c = _tiny()
  rec = results.new_record(
    dataset="fsdd",
    strategy="uniform",
    seed=0,
    command="x",
    config=c.to_dict(),
    train_size=300,
    test_size=100,
    num_classes=10,
    schedule=[10, 15, 20],
    initial_indices=np.arange(10),
  )
  path = results.result_path(tmp_path, "fsdd", "uniform", 0)
  results.save(path, rec)
  other = _tiny(**{"train.steps": 9}).to_dict()
  with pytest.raises(ValueError, match=r"config entries \['train'\] differ"):
    results.load_for_resume(path, dict(rec, config=other))
  with pytest.raises(ValueError, match="its seed=0 differs"):
    results.load_for_resume(path, dict(rec, seed=1))
  with pytest.raises(ValueError, match="its num_classes=10 differs"):
    results.load_for_resume(path, dict(rec, num_classes=12))
  # How trainings are driven may change between sessions (e.g. a GPU then a CPU machine).
  driven_differently = _tiny(
    **{"train.seed_mode": "map", "vmap_seeds": True, "report": not c.report}
  ).to_dict()
  assert results.load_for_resume(path, dict(rec, config=driven_differently))["seed"] == 0
  # Files written before train.seed_threads existed resume with any setting of it.
  threads = _tiny(**{"train.seed_threads": 2}).to_dict()
  older = c.to_dict()
  del older["train"]["seed_threads"]
  results.save(path, dict(rec, config=older))
  assert results.load_for_resume(path, dict(rec, config=threads))["seed"] == 0


def test_round0_model_name_ignores_seed_threads(tmp_path):
  """seed_threads changes no number, so round-0 models written before it existed stay valid."""
  from bilevel_jax.al import model_cache  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  tc = _tiny().train.to_dict()
  older = {k: v for k, v in tc.items() if k != "seed_threads"}
  args = ("fsdd", 0)
  rest = (np.arange(10), jax.random.key(0), 300, 10)
  want = model_cache.model_path(tmp_path, *args, older, *rest)
  assert model_cache.model_path(tmp_path, *args, dict(tc, seed_threads=2), *rest) == want
  assert model_cache.model_path(tmp_path, *args, dict(tc, steps=tc["steps"] + 1), *rest) != want


def test_selection_entry_keeps_small_diagnostics():
  """Per-pick diagnostics keep 8 significant digits: tiny CG residuals do not round to 0."""
  diag = {
    "cg_residual": np.array([2.0852011e-7, 1.2345678e-12], np.float32),
    "score": np.array([[1234.56789, -0.5]]),
    "nan": np.array([np.nan]),
  }
  got = results.selection_entry(diag)
  np.testing.assert_allclose(got["cg_residual"], diag["cg_residual"], rtol=1e-7)
  assert got["score"] == [[1234.5679, -0.5]]
  assert got["nan"] == [None]  # JSON has no NaN: written as null
  assert json.loads(json.dumps(got))["cg_residual"] == got["cg_residual"]


def test_speech_commands_without_full_data_fails_clearly(tmp_path, data_root, no_training):
  from experiments.configs import speech_commands  # pylint: disable=g-import-not-at-top

  if any((data_root / d).is_dir() for d in ("speech_commands_v2", "speech_commands")):
    pytest.skip("the full Speech Commands data is present")
  c = speech_commands.get_config("tiny")
  with pytest.raises(ValueError, match="config.dataset='speech_commands'.*cannot be loaded"):
    loop.run(c, tmp_path)


@pytest.mark.slow
def test_round0_model_is_shared_across_processes_through_the_workdir(
  tmp_path, fsdd_root, monkeypatch
):
  """A later run (another process in practice) loads round 0 instead of retraining it."""
  loop.run(_tiny(strategy="uniform"), tmp_path)
  assert len(list((tmp_path / "models").glob("*.msgpack"))) == 1
  calls = []
  real = ssl_train.train_many
  monkeypatch.setattr(
    ssl_train, "train_many", lambda *a, **k: calls.append(np.asarray(a[3]).shape) or real(*a, **k)
  )
  loop.run(_tiny(strategy="max_entropy"), tmp_path, resume=True)
  uni, _, acc_u = _picks(tmp_path, "uniform")
  ent, _, acc_e = _picks(tmp_path, "max_entropy")
  assert len(calls) == len(ent["rounds"]) - 1  # every round but round 0 trained
  assert acc_e[0] == acc_u[0]  # the very same round-0 model
  # A different training setting does not pick up that model.
  calls.clear()
  loop.run(_tiny(strategy="kcenter", **{"train.steps": 6}), tmp_path, resume=True)
  assert len(calls) == len(uni["rounds"])
  assert len(list((tmp_path / "models").glob("*.msgpack"))) == 2


@pytest.mark.parametrize("folder, mode", [("fsdd_cpu", "cpu"), ("fsdd_quick", "quick")])
def test_committed_results_resume_with_the_current_config(folder, mode):
  """The committed files stay resumable: same config (up to resume-ignored entries), though
  they record entries renamed since (predict_batch, bilevel.batch_size, bilevel.kernel_batch;
  results.RENAMED)."""
  files = sorted((_REPO / "results/active_learning" / folder).glob("fsdd_*_seed*.json"))
  if not files:
    pytest.skip(f"no committed {folder} results")
  for path in files:
    rec = io.read_json(path)
    assert "predict_batch" in rec["config"] and "kernel_batch" in rec["config"]["bilevel"]
    config = fsdd_config.get_config(mode)
    config.strategy, config.seed = rec["strategy"], rec["seed"]
    assert results.load_for_resume(path, dict(rec, config=config.to_dict()))["seed"] == rec["seed"]


def test_train_seconds_are_per_seed(monkeypatch):
  """A seed whose model is reused reports 0 s; before, it got the other seed's training time."""
  c = _tiny()
  labeled = {0: np.arange(10, dtype=np.int32), 1: np.arange(10, 20, dtype=np.int32)}
  shared = {(0, 1, labeled[0].tobytes()): "model0"}

  def fake_train_many(*args, **kwargs):
    time.sleep(0.02)
    return types.SimpleNamespace(classifiers=["model1"])

  monkeypatch.setattr(ssl_train, "train_many", fake_train_many)
  data = _zero_data()
  models, seconds = loop._train(c, data, [0, 1], 1, labeled, shared)
  assert models == {0: "model0", 1: "model1"}
  assert seconds[0] == 0.0 and seconds[1] >= 0.02


def test_two_processes_train_a_round0_model_once(monkeypatch, tmp_path):
  """Two callers wanting the same round-0 model: the first trains it under the file's lock,
  the second waits and loads it (before, both trained: e.g. the two AL lanes)."""
  import threading  # pylint: disable=g-import-not-at-top
  from bilevel_jax.al import model_cache  # pylint: disable=g-import-not-at-top

  c = _tiny()
  data = _zero_data()
  labeled = {0: np.arange(10, dtype=np.int32)}
  calls, started = [], threading.Event()

  def slow_train_many(*args, **kwargs):
    calls.append(1)
    started.set()
    time.sleep(0.5)  # the other caller arrives while this one trains
    return types.SimpleNamespace(classifiers=["model0"])

  monkeypatch.setattr(ssl_train, "train_many", slow_train_many)
  monkeypatch.setattr(model_cache, "save", lambda path, clf: io.atomic_write_json(path, clf))
  monkeypatch.setattr(
    model_cache, "load", lambda path, *a: io.read_json(path) if path.exists() else None
  )
  got = {}

  def caller(name):
    got[name] = loop._train(c, data, [0], 0, labeled, {}, tmp_path)

  first = threading.Thread(target=caller, args=("first",))
  first.start()
  assert started.wait(30)
  second = threading.Thread(target=caller, args=("second",))
  second.start()
  first.join(30)
  second.join(30)
  assert len(calls) == 1
  assert got["first"][0] == got["second"][0] == {0: "model0"}
  assert got["first"][1][0] > 0 and got["second"][1][0] == 0.0  # the second reused it


def test_round0_model_key_tells_training_subsets_apart(tmp_path):
  """Same size, labeled indices and key but other clips (subset.seed) must not share a model."""
  rng = np.random.default_rng(0)
  data = loop.Data(
    "fsdd",
    10,
    np.zeros((300, 4), np.float32),
    np.arange(300) % 10,
    np.zeros((2, 4), np.float32),
    np.zeros(2, np.int32),
    np.zeros((1, 8)),
  )
  labeled = rng.permutation(300)[:10]
  a = loop._round0_path(_tiny(), data, 0, labeled, tmp_path)
  b = loop._round0_path(_tiny(**{"subset.seed": 1}), data, 0, labeled, tmp_path)
  assert a != b
  assert a == loop._round0_path(_tiny(), data, 0, labeled, tmp_path)


def test_committed_cpu_round0_model_keeps_its_name():
  """Full-data runs keep the pre-subset file names (the fsdd_cpu models/ cache stays valid).

  The name is pinned (computed by the code of commit 07e1bb5, which was checked against the
  fsdd_cpu models/ cache), so the test needs no git-ignored models/ folder.
  """
  rec = io.read_json(_REPO / "results/active_learning/fsdd_cpu/fsdd_uniform_seed0.json")
  c = fsdd_config.get_config("cpu")
  data = loop.Data(
    "fsdd", rec["num_classes"], None, np.zeros(rec["train_size"], np.int32), None, None, None
  )
  path = loop._round0_path(
    c, data, 0, np.asarray(rec["initial_indices"], np.int32), pathlib.Path("work")
  )
  assert path == pathlib.Path("work/models/fsdd_seed0_round0_0e28ed6fa0bb7d9f.msgpack")


@pytest.mark.slow
def test_bilevel_rounds_record_selection_diagnostics(tmp_path, fsdd_root):
  """The bilevel strategy end to end at tiny scale: valid picks, per-pick solver diagnostics."""
  c = _tiny(strategy="bilevel")
  loop.run(c, tmp_path)
  rec = io.read_json(tmp_path / "fsdd_bilevel_seed0.json")
  assert rec["complete"]
  n_greedy = c.al.batch_size_per_round - round(
    c.bilevel.uniform_fraction * c.al.batch_size_per_round
  )
  for r in rec["rounds"][:-1]:
    assert len(set(r["picks"]) | set(r["labeled_indices"])) == len(r["labeled_indices"]) + 5
    sel = r["selection"]
    assert sorted(sel) == [
      "cg_residual",
      "ihvp_iterations",
      "inner_grad_norm",
      "inner_iterations",
      "inner_loss",
      "outer_loss",
      "score",
    ]
    assert all(len(v) == n_greedy for v in sel.values())
    assert all(np.isfinite(v).all() for v in sel.values())
    # tiny mode: the paper solver with the configured steps
    assert sel["inner_iterations"] == [c.bilevel.inner_steps] * n_greedy
    assert sel["ihvp_iterations"] == [c.bilevel.cg_steps] * n_greedy
  assert "selection" not in rec["rounds"][-1]  # the last round trains and evaluates only
