"""Initial pool and round schedule."""

from absl.testing import parameterized
import jax
import numpy as np

from bilevel_jax.al import pool


class PoolTest(parameterized.TestCase):
  @parameterized.parameters((10, 10), (25, 10), (50, 35))
  def test_initial_pool_covers_every_class(self, size, num_classes):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, 400)
    labels[:num_classes] = np.arange(num_classes)  # every class present
    idx = pool.initial_pool(jax.random.key(3), labels, size, num_classes)
    self.assertEqual(idx.shape, (size,))
    self.assertLen(set(idx.tolist()), size)
    self.assertEqual(set(labels[idx].tolist()), set(range(num_classes)))
    np.testing.assert_array_equal(
      idx, pool.initial_pool(jax.random.key(3), labels, size, num_classes)
    )
    self.assertFalse(
      np.array_equal(idx, pool.initial_pool(jax.random.key(4), labels, size, num_classes))
    )

  def test_rare_class_is_found(self):
    labels = np.zeros(1000, np.int32)
    labels[777] = 1
    for seed in range(5):
      idx = pool.initial_pool(jax.random.key(seed), labels, 2, 2)
      self.assertIn(777, idx.tolist())

  def test_errors(self):
    labels = np.arange(20) % 10
    with self.assertRaisesRegex(ValueError, "at least one point per class"):
      pool.initial_pool(jax.random.key(0), labels, 5, 10)
    with self.assertRaisesRegex(ValueError, r"Classes \[10\]"):
      pool.initial_pool(jax.random.key(0), labels, 11, 11)
    with self.assertRaisesRegex(ValueError, "larger than the training set"):
      pool.initial_pool(jax.random.key(0), labels, 21, 10)
    with self.assertRaisesRegex(ValueError, r"Labels must lie in \[0, 10\)"):
      pool.initial_pool(jax.random.key(0), np.arange(24) % 12, 10, 10)

  def test_schedule(self):
    self.assertEqual(pool.schedule(10, 60, 10), [10, 20, 30, 40, 50, 60])
    self.assertEqual(pool.schedule(50, 50, 10), [50])
    with self.assertRaisesRegex(ValueError, "smaller than the initial pool"):
      pool.schedule(10, 5, 10)
    with self.assertRaisesRegex(ValueError, "not a multiple"):
      pool.schedule(10, 35, 10)
    with self.assertRaisesRegex(ValueError, "al.batch_size_per_round=0"):
      pool.schedule(10, 60, 0)

  def test_round_keys_are_stable(self):
    s = pool.streams(0)
    a = jax.random.uniform(pool.round_key(s.select, 3))
    b = jax.random.uniform(pool.round_key(pool.streams(0).select, 3))
    self.assertEqual(float(a), float(b))
    self.assertNotEqual(float(a), float(jax.random.uniform(pool.round_key(s.select, 4))))
