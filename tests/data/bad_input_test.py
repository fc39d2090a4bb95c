"""Bad input: one pass finds every bad file; one error names them all, or they are skipped."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bilevel_jax import data
from bilevel_jax.data import decode
from tests.data import helpers

BAD_NAME = "recordings/2_bob_6.wav"  # a train clip of the helper dataset


def _write_bad(path, kind: str) -> str:
  """Turns `path` into a bad file of `kind`; returns a phrase the error must contain."""
  good = path.read_bytes()
  if kind == "empty":
    path.write_bytes(b"")
    return "empty file"
  if kind == "non_audio":
    path.write_text("this is a text file, not audio\n" * 20)
    return "not a readable audio file"
  if kind == "corrupt":
    path.write_bytes(good[:12] + bytes(range(256)) * 8)
    return "not a readable audio file"
  if kind == "truncated":
    path.write_bytes(good[: len(good) // 2])
    return "truncated WAV"
  if kind == "no_samples":
    sf.write(str(path), np.zeros((0,), np.float32), 8000)
    return "no samples"
  if kind == "rate_too_low":
    sf.write(str(path), helpers.tone(100, 0.5, 1000), 1000)
    return "sample rate 1000 Hz"
  raise ValueError(kind)


KINDS = ("empty", "non_audio", "corrupt", "truncated", "no_samples", "rate_too_low")


@pytest.mark.parametrize("kind", KINDS)
def test_bad_file_raises_naming_it_and_the_flag(tmp_path, kind):
  root = helpers.make_fsdd(tmp_path)
  phrase = _write_bad(root / BAD_NAME, kind)
  with pytest.raises(data.BadAudioError) as err:
    data.load_dataset("fsdd", root, progress=False)
  msg = str(err.value)
  assert str(root / BAD_NAME) in msg and phrase in msg and "expected" in msg
  assert "--on_error=skip" in msg and "on_error='skip'" in msg
  assert [l.strip().startswith(str(root / BAD_NAME)) for l in msg.splitlines()].count(True) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_skip_mode_leaves_bad_file_out_and_lists_it(tmp_path, kind):
  root = helpers.make_fsdd(tmp_path)
  phrase = _write_bad(root / BAD_NAME, kind)
  ds = data.load_dataset("fsdd", root, on_error="skip", progress=False)
  assert ds.train.waveforms.shape == (11, 16000) and ds.test.waveforms.shape == (12, 16000)
  assert BAD_NAME not in ds.train.files
  assert [s[0] for s in ds.skipped] == [BAD_NAME] and phrase in ds.skipped[0][1]


def test_all_bad_files_are_named_in_one_error(tmp_path):
  root = helpers.make_fsdd(tmp_path)
  _write_bad(root / BAD_NAME, "empty")
  _write_bad(root / "recordings/0_alice_0.wav", "non_audio")
  with pytest.raises(data.BadAudioError, match=r"2 bad file\(s\)") as err:
    data.load_dataset("fsdd", root, progress=False)
  assert "2_bob_6.wav" in str(err.value) and "0_alice_0.wav" in str(err.value)


def test_non_finite_samples_fail_at_decode_and_skip_keeps_rows_aligned(tmp_path):
  root = helpers.make_fsdd(tmp_path)
  x = helpers.tone(300, 0.4, 8000)
  x[100] = np.nan
  sf.write(str(root / "recordings/1_alice_5.wav"), x, 8000, subtype="FLOAT")
  with pytest.raises(data.BadAudioError, match="1_alice_5.wav.*NaN"):
    data.load_dataset("fsdd", root, progress=False)
  ds = data.load_dataset("fsdd", root, on_error="skip", progress=False)
  assert [s[0] for s in ds.skipped] == ["recordings/1_alice_5.wav"]
  assert len(ds.train.files) == 11 and ds.train.waveforms.shape == (11, 16000)
  for i, f in enumerate(ds.train.files):  # rows still line up with files after the gap
    np.testing.assert_allclose(ds.train.waveforms[i], decode.load_clip(root / f), atol=1e-7)
    assert ds.train.labels[i] == int(f.split("/")[1][0])


def test_skip_mode_with_every_file_bad_gives_empty_splits(tmp_path):
  root = helpers.make_fsdd(tmp_path, takes=(0, 5), digits=(1,), speakers=("alice",))
  for f in (root / "recordings").iterdir():
    f.write_bytes(b"")
  ds = data.load_dataset("fsdd", root, on_error="skip", progress=False)
  assert ds.train.waveforms.shape == (0, 16000) and ds.test.labels.shape == (0,)
  assert len(ds.skipped) == 2


def test_stereo_is_mixed_down_to_mono(tmp_path):
  left, right = helpers.tone(440, 0.5, 16000), helpers.tone(660, 0.5, 16000, amp=0.2)
  path = tmp_path / "stereo.wav"
  sf.write(str(path), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
  assert decode.probe(path).channels == 2
  np.testing.assert_allclose(
    decode.load_clip(path), decode.fix_length((left + right) / 2), atol=1e-7
  )


@pytest.mark.parametrize("rate", [11025, 22050, 44100, 48000])
def test_odd_sample_rates_are_resampled_to_16k(tmp_path, rate):
  path = tmp_path / f"r{rate}.wav"
  sf.write(str(path), helpers.tone(1000, 0.75, rate), rate, subtype="FLOAT")
  y = decode.load_mono_16k(path)
  assert abs(len(y) - 12000) <= 1
  spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
  assert abs(np.fft.rfftfreq(len(y), 1 / 16000)[np.argmax(spec)] - 1000) < 3
  assert decode.load_clip(path).shape == (16000,)


def test_fix_length_is_centred():
  np.testing.assert_array_equal(decode.fix_length(np.ones(4), 8), [0, 0, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(decode.fix_length(np.arange(10.0), 4), [3, 4, 5, 6])
  np.testing.assert_array_equal(decode.fix_length(np.ones(5), 8), [0, 1, 1, 1, 1, 1, 0, 0])


def test_unexpected_file_name_is_rejected_or_skipped(tmp_path):
  root = helpers.make_fsdd(tmp_path)
  helpers.write_wav(root / "recordings/three_alice_1.wav", helpers.tone(300, 0.3, 8000), 8000)
  with pytest.raises(ValueError, match=r"three_alice_1.wav.*\{digit\}_\{speaker\}_\{take\}"):
    data.load_dataset("fsdd", root, progress=False)
  ds = data.load_dataset("fsdd", root, on_error="skip", progress=False)
  assert [s[0] for s in ds.skipped] == ["recordings/three_alice_1.wav"]
  assert len(ds.train.files) + len(ds.test.files) == 24


def test_missing_data_root_and_bad_arguments(tmp_path):
  missing = tmp_path / "does_not_exist"
  with pytest.raises(FileNotFoundError, match="does_not_exist"):
    data.load_dataset("fsdd", missing, progress=False)
  with pytest.raises(ValueError, match="on_error='ignore'"):
    data.load_dataset("fsdd", tmp_path, on_error="ignore")
  with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
    data.load_dataset("mnist", tmp_path)
  with pytest.raises(data.BadAudioError, match="missing or not a regular file"):
    decode.probe(tmp_path / "nothing.wav")


def test_download_is_fsdd_only(tmp_path):
  with pytest.raises(ValueError, match="fetches FSDD only, not 'speech_commands'"):
    data.load_dataset("speech_commands", tmp_path, download=True, progress=False)


def test_long_problem_lists_are_cut_with_a_count():
  listing = decode.problem_listing([f"f{i}: empty file" for i in range(23)], limit=20)
  assert listing.count("empty file") == 20
  assert listing.endswith("\n  ... and 3 more (--on_error=skip lists them all)")
  assert decode.problem_listing(["a: b"]) == "\n  a: b"


def test_23_bad_files_are_all_listed(tmp_path):
  root = helpers.make_fsdd(tmp_path, takes=tuple(range(12)), digits=(1, 2), speakers=("alice",))
  bad = sorted((root / "recordings").iterdir())[:23]
  for f in bad[:12]:
    f.write_bytes(b"")
  for f in bad[12:]:
    f.rename(f.with_name("x" + f.name))  # unexpected names
  with pytest.raises(data.BadAudioError, match=r"23 bad file\(s\)") as err:
    data.load_dataset("fsdd", root, progress=False)
  msg = str(err.value)
  assert msg.count("empty file") == 12 and msg.count("unexpected entry") == 11
  assert "more" not in msg


def _tone_file(path, x, subtype="FLOAT"):
  sf.write(str(path), x, 8000, subtype=subtype)


def test_one_pass_one_error_names_every_bad_file_of_every_kind(tmp_path):
  """A misnamed file must not hide corrupt ones, nor a header problem hide NaN/Inf/loud ones."""
  root = helpers.make_fsdd(tmp_path)
  rec = root / "recordings"
  helpers.write_wav(rec / "three_alice_1.wav", helpers.tone(300, 0.3, 8000), 8000)
  _write_bad(rec / "0_alice_0.wav", "corrupt")
  _write_bad(rec / "0_bob_1.wav", "truncated")
  x = helpers.tone(300, 0.4, 8000)
  nan, inf, loud, ok_loud = x.copy(), x.copy(), x.copy(), x.copy()
  nan[10], inf[20], loud[30], ok_loud[40] = np.nan, np.inf, 1e6, 1.5
  _tone_file(rec / "1_alice_5.wav", nan)
  _tone_file(rec / "1_bob_6.wav", inf)
  _tone_file(rec / "2_alice_5.wav", loud)
  _tone_file(rec / "2_bob_5.wav", ok_loud)  # a little over full scale is tolerated
  expected = {
    "recordings/three_alice_1.wav": "unexpected entry",
    "recordings/0_alice_0.wav": "not a readable audio file",
    "recordings/0_bob_1.wav": "truncated WAV",
    "recordings/1_alice_5.wav": "NaN or infinite",
    "recordings/1_bob_6.wav": "NaN or infinite",
    "recordings/2_alice_5.wav": "peak amplitude 1e+06; expected samples in [-1, 1]",
  }
  with pytest.raises(data.BadAudioError, match=r"6 bad file\(s\)") as err:
    data.load_dataset("fsdd", root, progress=False)
  msg = str(err.value)
  for rel, phrase in expected.items():
    line = next(l for l in msg.splitlines() if str(root / rel) + ":" in l)
    assert phrase in line, (rel, line)
    assert [l.strip().startswith(str(root / rel)) for l in msg.splitlines()].count(True) == 1
  assert "--on_error=skip" in msg and "2_bob_5.wav" not in msg
  ds = data.load_dataset("fsdd", root, on_error="skip", progress=False)
  skipped = [p for p, _ in ds.skipped]
  assert skipped == sorted(expected) and len(set(skipped)) == len(skipped)
  for rel, reason in ds.skipped:
    assert expected[rel] in reason
  kept = set(ds.train.files) | set(ds.test.files)
  assert len(kept) == 24 - 5 and not kept & set(expected)
  assert "recordings/2_bob_5.wav" in kept


def test_unique_problems_lists_each_path_once():
  from bilevel_jax.data import core  # pylint: disable=import-outside-toplevel

  got = core.unique_problems([("b", "r1"), ("a", "r2"), ("b", "r1"), ("b", "r3")])
  assert got == [("a", "r2"), ("b", "r1; r3")]


def test_active_learning_entry_point_has_the_same_on_error_choice(tmp_path):
  """loop.run(on_error=...), i.e. --on_error of experiments.active_learning, reaches the data."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  from bilevel_jax.al import loop  # pylint: disable=import-outside-toplevel
  from experiments.configs import fsdd as fsdd_config  # pylint: disable=import-outside-toplevel

  root = helpers.make_fsdd(tmp_path)
  _write_bad(root / BAD_NAME, "corrupt")
  config = fsdd_config.get_config("tiny")
  config.data_root, config.progress = str(tmp_path), False
  config.subset.train = config.subset.test = 0
  with pytest.raises(ValueError, match=r"cannot be loaded.*1 bad file.*--on_error=skip"):
    loop.load_data(config)
  loaded = loop.load_data(config, on_error="skip")
  assert loaded.train_waveforms.shape[0] == 11 and loaded.test_waveforms.shape[0] == 12
  # The entry point defines the flag (a subprocess: two entry points' flags cannot share one
  # process) and passes it on.
  helpshort = subprocess.run(
    [sys.executable, "-m", "experiments.active_learning", "--helpshort"],
    capture_output=True,
    text=True,
    check=False,
  ).stdout
  assert "--on_error: <raise|skip>" in helpshort
