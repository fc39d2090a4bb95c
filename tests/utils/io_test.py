import json
import os

import numpy as np
import pytest

from bilevel_jax.utils import io, paths


def test_atomic_write_json_roundtrip_with_arrays(tmp_path):
  path = tmp_path / "sub" / "r.json"
  io.atomic_write_json(path, {"a": np.arange(3), "b": np.float32(1.5), "c": [np.int64(2)]})
  assert json.loads(path.read_text()) == {"a": [0, 1, 2], "b": 1.5, "c": [2]}
  assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp files left


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
  path = tmp_path / "r.json"
  io.atomic_write_json(path, {"ok": 1})
  with pytest.raises(TypeError):
    io.atomic_write_json(path, {"bad": object()})
  assert json.loads(path.read_text()) == {"ok": 1}
  assert len(list(tmp_path.iterdir())) == 1


def test_atomic_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
  old = os.umask(0o022)
  try:
    io.atomic_write_json(tmp_path / "r.json", {"a": 1})
    io.atomic_save_npy(tmp_path / "a.npy", np.arange(3))
  finally:
    os.umask(old)
  for name in ("r.json", "a.npy"):
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_atomic_path_removes_the_temp_file_when_the_block_fails(tmp_path):
  with pytest.raises(RuntimeError, match="boom"):
    with io.atomic_path(tmp_path / "x.npy", suffix=".tmp.npy") as tmp:
      np.save(tmp, np.arange(2))
      raise RuntimeError("boom")
  assert list(tmp_path.iterdir()) == []


def test_data_root_resolution(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.DATA_ENV, str(tmp_path))
  assert paths.resolve_data_root() == tmp_path.resolve()
  assert paths.resolve_data_root(str(tmp_path)) == tmp_path.resolve()
  with pytest.raises(FileNotFoundError, match="does not exist"):
    paths.resolve_data_root(str(tmp_path / "missing"))
  monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="BILEVEL_JAX_DATA"):
    paths.resolve_data_root()
