"""Landmark-kernel cache: interrupted + resumed == uninterrupted; second call is a hit."""

import jax
import numpy as np
import pytest

from bilevel_jax.ntk import cache
from bilevel_jax.ntk import kernel_matrix as km
from bilevel_jax.ntk import nystrom
from tests.ntk.conftest import downsample


class _Interrupt(Exception):
  pass


def test_resume_after_interrupt_matches_uninterrupted(fsdd_log_mels, tmp_path):
  x = downsample(fsdd_log_mels(10, seed=7), 2)  # (10, 16, 16, 1)
  idx = nystrom.draw_landmarks(jax.random.key(0), 10, 4)
  kw = dict(depth=10, block_rows=2, tile=(2, 4), progress=False)

  def stop_after_two(done, total):
    if done == 2:
      raise _Interrupt

  with pytest.raises(_Interrupt):
    cache.landmark_kernel(x, idx, cache_dir=tmp_path / "a", callback=stop_after_two, **kw)
  seen = []
  resumed = cache.landmark_kernel(
    x, idx, cache_dir=tmp_path / "a", callback=lambda d, t: seen.append(d), **kw
  )
  assert resumed.computed_blocks == 3 and seen == [3, 4, 5]  # only the 3 missing blocks
  straight = cache.landmark_kernel(x, idx, cache_dir=tmp_path / "b", **kw)
  assert straight.computed_blocks == 5
  np.testing.assert_array_equal(resumed.matrix, straight.matrix)
  want = km.kernel_matrix(x, x[idx], depth=10, tile=(2, 4), progress=False)
  np.testing.assert_allclose(resumed.matrix, want, rtol=1e-6)

  hit = cache.landmark_kernel(
    x,
    idx,
    cache_dir=tmp_path / "a",
    callback=lambda d, t: pytest.fail("cache hit computed a block"),
    **kw,
  )
  assert hit.computed_blocks == 0 and hit.path == resumed.path
  np.testing.assert_array_equal(hit.matrix, straight.matrix)
  # Another landmark draw or architecture is another entry.
  other = cache.landmark_kernel(x, idx[::-1].copy(), cache_dir=tmp_path / "a", **kw)
  assert other.path != resumed.path


def test_default_location_is_cache_root_and_bad_indices_raise(fsdd_log_mels):
  x = downsample(fsdd_log_mels(4, seed=7), 2)
  with pytest.raises(ValueError, match="landmark_idx"):
    cache.landmark_kernel(x, np.array([0, 4]), depth=10, progress=False)
  res = cache.landmark_kernel(x, np.array([1, 3]), depth=10, tile=(2, 4), progress=False)
  from bilevel_jax.utils import paths

  assert res.path.parent == paths.cache_root() / "ntk"


def test_cross_kernel_any_columns(fsdd_log_mels, tmp_path):
  x = downsample(fsdd_log_mels(5, seed=7), 2)
  u = downsample(fsdd_log_mels(3, seed=8), 2)  # columns that are not rows of x
  kw = dict(depth=10, block_rows=2, tile=(2, 4), progress=False, cache_dir=tmp_path)
  first = cache.cross_kernel(x, u, **kw)
  assert first.computed_blocks == 3 and first.matrix.shape == (5, 3)
  want = km.kernel_matrix(x, u, depth=10, tile=(2, 4), progress=False)
  np.testing.assert_allclose(first.matrix, want, rtol=1e-6)
  hit = cache.cross_kernel(x, u, **kw)
  assert hit.computed_blocks == 0 and hit.path == first.path
  assert cache.cross_kernel(x, u[::-1].copy(), **kw).path != first.path
  with pytest.raises(ValueError, match="share"):
    cache.cross_kernel(x, u[:, :8], **kw)


def test_second_caller_waits_for_the_first_and_reads_its_kernel(fsdd_log_mels, tmp_path, caplog):
  """Two callers of one cache entry (as two AL processes): the second blocks on the lock while
  the first fills the folder, then reads the finished kernel without computing a block."""
  import logging  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top

  caplog.set_level(logging.INFO, logger="bilevel_jax.utils.io")  # where the lock logs its wait
  x = downsample(fsdd_log_mels(6, seed=7), 2)
  idx = np.array([0, 2, 5])
  kw = dict(depth=10, block_rows=2, tile=(2, 4), progress=False, cache_dir=tmp_path)
  second, second_done = {}, threading.Event()

  def run_second():
    second["res"] = cache.landmark_kernel(x, idx, **kw)
    second_done.set()

  def on_block(done, total):
    if done == 1:  # the first caller holds the lock and has written one block
      threading.Thread(target=run_second).start()
      assert not second_done.wait(1.0), "second caller ran while the first held the lock"

  first = cache.landmark_kernel(x, idx, callback=on_block, **kw)
  assert second_done.wait(60)
  assert first.computed_blocks == 3 and second["res"].computed_blocks == 0
  waits = [r.getMessage() for r in caplog.records if "Waiting for another" in r.getMessage()]
  assert waits == [f"Waiting for another process to finish the kernel cache entry {first.path}."]
  np.testing.assert_array_equal(second["res"].matrix, first.matrix)


def test_file_system_without_locks_still_fills_the_cache(fsdd_log_mels, tmp_path, monkeypatch):
  """flock failing (e.g. ENOLCK on NFS without a lock daemon) warns and computes unlocked."""
  import errno  # pylint: disable=g-import-not-at-top
  import fcntl  # pylint: disable=g-import-not-at-top

  def no_locks(f, op):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(fcntl, "flock", no_locks)
  x = downsample(fsdd_log_mels(4, seed=7), 2)
  kw = dict(depth=10, block_rows=2, tile=(2, 4), progress=False, cache_dir=tmp_path)
  with pytest.warns(RuntimeWarning, match="No locks available"):
    got = cache.landmark_kernel(x, np.array([0, 3]), **kw)
  assert got.computed_blocks == 2
  monkeypatch.undo()
  again = cache.landmark_kernel(x, np.array([0, 3]), **kw)
  assert again.computed_blocks == 0
  np.testing.assert_array_equal(again.matrix, got.matrix)
