"""FSDD input listing: split by take index, stray files named."""
import pytest

from bilevel_jax.ntk import inputs


def test_split_by_take_and_stray_file_is_named(tmp_path):
  rec = tmp_path / "fsdd" / "recordings"
  rec.mkdir(parents=True)
  for name in ("3_jackson_4.wav", "3_jackson_5.wav", "7_theo_49.wav"):
    (rec / name).touch()
  assert [f.name for f in inputs.fsdd_files(tmp_path, split="test")] == ["3_jackson_4.wav"]
  assert [f.name for f in inputs.fsdd_files(tmp_path)] == ["3_jackson_5.wav", "7_theo_49.wav"]
  # Before the review: "invalid literal for int() with base 10: 'copy'", no file named.
  (rec / "3_jackson_5_copy.wav").touch()
  with pytest.raises(ValueError, match=r"3_jackson_5_copy.wav is not named"):
    inputs.fsdd_files(tmp_path)
