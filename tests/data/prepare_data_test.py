"""The data-preparation job end to end on a small dataset written by the test."""

from __future__ import annotations

from bilevel_jax.utils import io
from experiments import prepare_data
from tests.data import helpers


def test_prepare_data_writes_summary_and_png(tmp_path, capsys):
  root = helpers.make_fsdd(tmp_path / "d")
  helpers.write_wav(
    root.parent / "_background_noise_" / "n.wav", helpers.tone(50, 2.0, 16000), 16000
  )
  summary = prepare_data.run("fsdd", str(root.parent), str(tmp_path / "work"), num_examples=3)
  out = capsys.readouterr().out
  assert "== fsdd ==" in out and "Durations before pad/crop" in out
  on_disk = io.read_json(tmp_path / "work" / "summary.json")
  assert on_disk["splits"] == summary["splits"]
  train = on_disk["splits"]["train"]
  assert train["num_clips"] == 12 and train["num_speakers"] == 2
  assert train["per_class"] == {"0": 4, "1": 4, "2": 4, **{str(d): 0 for d in range(3, 10)}}
  # helpers.make_fsdd: durations 0.3 + 0.05 * take for takes 5, 6 in train.
  assert abs(train["duration_s"]["min"] - 0.55) < 1e-3
  assert abs(train["duration_s"]["max"] - 0.6) < 1e-3
  assert on_disk["noise_shape"] == [1, 32000]
  png = (tmp_path / "work" / "examples.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
