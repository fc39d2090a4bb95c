"""experiments.ssl_vs_supervised: seeds trained together or in sequence give the same results.

Run as subprocesses: the experiment's absl flags would clash with other experiment modules
imported into the same test process.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bilevel_jax.utils import io
from experiments.configs import mixmatch

_REPO = pathlib.Path(__file__).resolve().parents[2]


def test_paper_scale_trains_seeds_in_sequence_and_cpu_scale_together():
  assert not mixmatch.get_config("paper").seeds_together
  assert mixmatch.get_config("cpu").seeds_together


def _figure1(workdir: pathlib.Path, data_root: pathlib.Path, seeds_together: bool) -> dict:
  cmd = [
    sys.executable,
    "-m",
    "experiments.ssl_vs_supervised",
    "--config=experiments/configs/mixmatch.py:tiny",
    "--config.methods=('supervised',)",
    "--config.progress=False",
    f"--config.data_root={data_root}",
    f"--config.seeds_together={seeds_together}",
    f"--workdir={workdir}",
  ]
  proc = subprocess.run(
    cmd,
    cwd=_REPO,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return io.read_json(workdir / "results.json")


@pytest.mark.slow
@pytest.mark.usefixtures("fsdd_root")
def test_seeds_together_and_in_sequence_agree(tmp_path, data_root):
  a = _figure1(tmp_path / "together", data_root, True)["runs"]["supervised"]["10"]
  b = _figure1(tmp_path / "apart", data_root, False)["runs"]["supervised"]["10"]
  np.testing.assert_array_equal(a["labeled_indices"], b["labeled_indices"])
  np.testing.assert_array_equal(a["accuracy"], b["accuracy"])
  assert len(a["accuracy"]) == 2
  # In sequence, each seed keeps its own checkpoint folder: the flag did take effect.
  assert (tmp_path / "apart/train/supervised_10/seed1").is_dir()
  assert not (tmp_path / "together/train/supervised_10/seed1").exists()
