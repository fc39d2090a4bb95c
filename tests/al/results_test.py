"""Result files: renamed config entries keep old records resumable."""

from __future__ import annotations

import numpy as np
import pytest

from bilevel_jax.al import results
from bilevel_jax.utils import io


def _record(config):
  return results.new_record(
    dataset="fsdd",
    strategy="uniform",
    seed=0,
    command="c",
    config=config,
    train_size=30,
    test_size=10,
    num_classes=3,
    schedule=[3, 5],
    initial_indices=np.arange(3),
  )


def test_upgrade_config_moves_renamed_entries():
  old = {"al": {"initial": 3, "batch": 2}, "train": {"steps": 8}}
  new = results.upgrade_config(old)
  assert new == {"al": {"initial": 3, "batch_size_per_round": 2}, "train": {"steps": 8}}
  assert old["al"]["batch"] == 2  # the record itself is not changed
  assert results.upgrade_config(new) == new  # current names pass through


def test_old_record_resumes_under_the_new_name(tmp_path):
  path = tmp_path / "fsdd_uniform_seed0.json"
  io.atomic_write_json(path, _record({"al": {"initial": 3, "batch": 2}}))
  expected = _record({"al": {"initial": 3, "batch_size_per_round": 2}})
  assert results.load_for_resume(path, expected)["config"]["al"] == {"initial": 3, "batch": 2}
  changed = _record({"al": {"initial": 3, "batch_size_per_round": 1}})
  with pytest.raises(ValueError, match=r"config entries \['al'\] differ"):
    results.load_for_resume(path, changed)


def test_record_before_solver_keys_resumes_as_the_old_conventions(tmp_path):
  """A bilevel block without solver / loss_reduction was run with solver="paper" and
  loss_reduction="mean": a config naming those resumes it, one naming "sum" does not."""
  path = tmp_path / "fsdd_uniform_seed0.json"
  io.atomic_write_json(path, _record({"bilevel": {"l2": 1e-4}}))
  tols = {
    "inner_tol": 1e-6,
    "ihvp_rtol": 1e-4,
    **results.upgrade_config({"bilevel": {"l2": 1e-4}})["bilevel"],
  }
  tols.pop("l2")
  old = _record({"bilevel": {"l2": 1e-4, "solver": "paper", "loss_reduction": "mean", **tols}})
  assert results.load_for_resume(path, old)["config"]["bilevel"] == {"l2": 1e-4}
  for change in ({"loss_reduction": "sum"}, {"solver": "exact"}):
    new = _record(
      {"bilevel": {"l2": 1e-4, "solver": "paper", "loss_reduction": "mean", **tols, **change}}
    )
    with pytest.raises(ValueError, match=r"config entries \['bilevel'\] differ"):
      results.load_for_resume(path, new)


def test_record_without_kernel_options_reads_as_the_legacy_kernel(tmp_path):
  """Records written before bilevel.ntk_* existed used ReLU without a final activation."""
  path = tmp_path / "fsdd_bilevel_seed0.json"
  io.atomic_write_json(path, _record({"bilevel": {"ntk_depth": 10}}))
  legacy = dict(
    ntk_depth=10, ntk_activation="relu", ntk_leaky_slope=0.0, ntk_final_activation=False
  )
  assert results.load_for_resume(path, _record({"bilevel": legacy}))["seed"] == 0
  trained = dict(
    legacy, ntk_activation="leaky_relu", ntk_leaky_slope=0.1, ntk_final_activation=True
  )
  with pytest.raises(ValueError, match=r"config entries \[.bilevel.\] differ"):
    results.load_for_resume(path, _record({"bilevel": trained}))
  assert results.upgrade_config({"al": {"initial": 3}}) == {"al": {"initial": 3}}  # no block


def test_old_chunk_and_inner_batch_names_resume_under_the_new_ones(tmp_path):
  """Records from before predict_batch / bilevel.batch_size / bilevel.kernel_batch (and the
  variants' blocks) were renamed resume against a config with the new names, same values."""
  blocks = ("bilevel", "bilevel_tempered", "bilevel_ssl", "bilevel_embed")
  old = {"predict_batch": 256, **{b: {"batch_size": 64, "kernel_batch": 16} for b in blocks}}
  new = {"predict_chunk": 256, **{b: {"inner_batch_size": 64, "kernel_chunk": 16} for b in blocks}}
  new = results.with_added_defaults(new)  # what the old record's bilevel block gets too
  assert results.upgrade_config(old) == new
  assert results.upgrade_config(new) == new
  assert results.upgrade_config({"train": {"batch_size": 8}}) == {"train": {"batch_size": 8}}
  path = tmp_path / "fsdd_bilevel_seed0.json"
  io.atomic_write_json(path, _record(old))
  assert results.load_for_resume(path, _record(new))["config"] == old  # the file is kept as is
  changed = dict(new, bilevel={"inner_batch_size": 32, "kernel_chunk": 16})
  with pytest.raises(ValueError, match=r"config entries \['bilevel'\] differ"):
    results.load_for_resume(path, _record(changed))
