"""experiments.ssl_vs_supervised: seeds trained together or in sequence give the same results."""
import numpy as np
import pytest

from experiments import ssl_vs_supervised
from experiments.configs import mixmatch


def _smoke(seeds_together: bool, data_root):
  c = mixmatch.get_config("smoke")
  c.methods = ("supervised",)
  c.progress = False
  c.data_root = str(data_root)
  c.seeds_together = seeds_together
  return c


def test_paper_scale_trains_seeds_in_sequence_and_cpu_scale_together():
  assert not mixmatch.get_config("paper").seeds_together
  assert mixmatch.get_config("cpu").seeds_together


@pytest.mark.usefixtures("fsdd_root")
def test_seeds_together_and_in_sequence_agree(tmp_path, data_root):
  together = ssl_vs_supervised.run(_smoke(True, data_root), tmp_path / "together")
  apart = ssl_vs_supervised.run(_smoke(False, data_root), tmp_path / "apart")
  a = together["runs"]["supervised"]["10"]
  b = apart["runs"]["supervised"]["10"]
  np.testing.assert_array_equal(a["labeled_indices"], b["labeled_indices"])
  np.testing.assert_array_equal(a["accuracy"], b["accuracy"])
  assert len(a["accuracy"]) == 2
