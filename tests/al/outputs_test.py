"""round_context: hides pool labels, rejects inconsistent shapes and labeled indices."""

import numpy as np
import pytest

from bilevel_jax.al import outputs


def _outputs(n=6, c=3, e=2, k=None):
  rng = np.random.default_rng(0)
  aug = None if k is None else rng.uniform(size=(k, n, c))
  return outputs.ModelOutputs(rng.uniform(size=(n, c)), rng.normal(size=(n, e)), aug)


def test_pool_labels_are_hidden():
  ctx = outputs.round_context(_outputs(k=2), np.arange(6) % 3, np.array([4, 1]))
  np.testing.assert_array_equal(ctx.labels, [-1, 1, -1, -1, 1, -1])
  np.testing.assert_array_equal(ctx.labeled_mask, [0, 1, 0, 0, 1, 0])
  np.testing.assert_array_equal(ctx.labeled_idx, [4, 1])  # labeling order kept


@pytest.mark.parametrize("idx", [[1, 1], [6], [-1]])
def test_bad_labeled_indices_raise(idx):
  with pytest.raises(ValueError, match=r"distinct indices in \[0, 6\)"):
    outputs.round_context(_outputs(), np.arange(6) % 3, np.array(idx))


def test_shape_mismatches_raise():
  labels = np.arange(6) % 3
  with pytest.raises(AssertionError):
    outputs.round_context(_outputs(), labels[:5], np.array([0]))
  with pytest.raises(AssertionError):
    outputs.round_context(
      _outputs(k=2)._replace(aug_probs=np.ones((2, 6, 4))), labels, np.array([0])
    )
  with pytest.raises(AssertionError):
    outputs.round_context(
      _outputs(), labels, np.array([0, 1]), features=np.ones((5, 3)), bank=np.ones((2, 1, 3))
    )
  with pytest.raises(AssertionError):
    outputs.round_context(
      _outputs(), labels, np.array([0, 1]), features=np.ones((6, 3)), bank=np.ones((3, 1, 3))
    )
