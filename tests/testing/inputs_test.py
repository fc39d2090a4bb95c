"""Test inputs: real FSDD log-mels from the official split."""

import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax import audio
from bilevel_jax.data import decode
from bilevel_jax.testing import inputs


def test_same_clips_as_files_sorted_by_name_with_take_at_least_5(fsdd_root):
  """The rule the kernel benchmarks' committed results were drawn with (before this module
  used data.load_dataset): train = takes 5-49, files sorted by name, NumPy choice of n."""
  files = sorted(
    f for f in (fsdd_root / "recordings").glob("*.wav") if int(f.stem.split("_")[2]) >= 5
  )
  idx = np.sort(np.random.default_rng(3).choice(len(files), 4, replace=False))
  want = audio.featurize(jnp.asarray(np.stack([decode.load_clip(files[i]) for i in idx])))
  got = inputs.fsdd_log_mels(4, seed=3, data_root=fsdd_root.parent)
  np.testing.assert_array_equal(got, np.asarray(want))


def test_bad_arguments_are_named(fsdd_root):
  with pytest.raises(ValueError, match="split='validation'"):
    inputs.fsdd_log_mels(2, data_root=fsdd_root.parent, split="validation")
  with pytest.raises(ValueError, match=r"n=301; expected 1 <= n <= 300 FSDD test clips"):
    inputs.fsdd_log_mels(301, data_root=fsdd_root.parent, split="test")
