"""Writers that two processes may run at once: unique temporary names, locks, fsync, umask."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest

from bilevel_jax.utils import io


def test_umask_is_read_without_changing_it(tmp_path, monkeypatch):
  old = os.umask(0o027)
  try:

    def no_flip(*args):
      raise AssertionError("os.umask called: it changes the mask for every thread")

    monkeypatch.setattr(os, "umask", no_flip)
    assert io.process_umask() == 0o027
    io.atomic_write_json(tmp_path / "r.json", {"a": 1})
    io.atomic_savez(tmp_path / "a.npz", x=np.arange(3))
  finally:
    monkeypatch.undo()
    os.umask(old)
  for name in ("r.json", "a.npz"):
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name


@pytest.mark.parametrize(
  "write",
  [
    lambda p: io.atomic_write_json(p / "r.json", {"a": 1}),
    lambda p: io.atomic_save_npy(p / "a.npy", np.arange(3)),
    lambda p: io.atomic_savez(p / "a.npz", compressed=True, x=np.arange(3)),
  ],
  ids=["json", "npy", "npz"],
)
def test_data_and_folder_are_fsynced(tmp_path, monkeypatch, write):
  synced = []
  real = os.fsync

  def record(fd):
    mode = os.fstat(fd).st_mode
    synced.append("dir" if stat.S_ISDIR(mode) else "file")
    real(fd)

  monkeypatch.setattr(os, "fsync", record)
  write(tmp_path)
  assert "file" in synced and synced[-1] == "dir", synced  # data first, the rename last


def test_two_writers_of_one_path_do_not_share_a_temp_file(tmp_path, monkeypatch):
  path = tmp_path / "features.npz"
  both_writing = threading.Barrier(2, timeout=30)
  real = np.savez
  errors = []

  def slow_savez(file, **arrays):
    real(file, **arrays)
    both_writing.wait()  # both temporary files exist before either is renamed

  monkeypatch.setattr(np, "savez", slow_savez)

  def writer(value):
    try:
      io.atomic_savez(path, x=np.full(3, value))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  with np.load(path) as f:
    assert f["x"].tolist() in ([1, 1, 1], [2, 2, 2])
  assert [p.name for p in tmp_path.iterdir()] == ["features.npz"]


def test_two_row_writers_of_one_path_both_finish(tmp_path):
  from bilevel_jax.scaling import streaming  # pylint: disable=g-import-not-at-top

  path = tmp_path / "z.npy"
  a = streaming.RowWriter(path, (2, 3))
  b = streaming.RowWriter(path, (2, 3))
  a.append(np.ones((2, 3)))
  b.append(np.zeros((2, 3)))
  a.close()
  b.close()
  np.testing.assert_array_equal(np.load(path), np.zeros((2, 3)))
  assert [p.name for p in tmp_path.iterdir()] == ["z.npy"]


def test_kernel_features_are_written_under_their_lock(tmp_path, monkeypatch):
  import fcntl  # pylint: disable=g-import-not-at-top
  from bilevel_jax.ntk import features as kernel  # pylint: disable=g-import-not-at-top
  from tests.ntk.features_test import _config  # pylint: disable=g-import-not-at-top

  monkeypatch.setenv("BILEVEL_JAX_CACHE", str(tmp_path))
  real, held = io.atomic_savez, []

  def check_lock(path, **kwargs):
    with open(f"{path}.lock", "a+b") as f:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(False)
        fcntl.flock(f, fcntl.LOCK_UN)
      except BlockingIOError:
        held.append(True)
    real(path, **kwargs)

  monkeypatch.setattr(io, "atomic_savez", check_lock)
  rng = np.random.default_rng(1)
  waves = (0.1 * rng.normal(size=(6, 16000))).astype(np.float32)
  noise = (0.01 * rng.normal(size=(1, 20000))).astype(np.float32)
  kernel.KernelFeatures(_config(m=3).bilevel, waves, noise, tag="locked")
  assert held == [True]
  names = sorted(p.name for p in (tmp_path / "al_kernel").iterdir())
  assert [n for n in names if not n.endswith((".npz", ".json", ".lock"))] == []
