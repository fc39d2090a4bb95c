"""Speech Commands V2: the real sample (decoding, vocabulary, labels, speakers) and split logic."""

from __future__ import annotations

import pathlib
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from bilevel_jax import data
from bilevel_jax.data import decode, speech_commands
from tests.data import helpers


@pytest.fixture(scope="module")
def sample(speech_commands_sample_root):
  return data.load_dataset(
    "speech_commands_sample", speech_commands_sample_root.parent, progress=False
  )


def test_real_sample_vocabulary_labels_speakers(sample, speech_commands_sample_root):
  words = sorted(
    p.name
    for p in speech_commands_sample_root.iterdir()
    if p.is_dir() and not p.name.startswith("_")
  )
  assert len(words) == 35 and sample.class_names == tuple(words) == speech_commands.WORDS
  assert "_background_noise_" not in sample.class_names
  # Every clip of the sample is in the official testing list (see its README).
  assert sample.train.waveforms.shape == (0, 16000)
  assert sample.validation.waveforms.shape == (0, 16000)
  test = sample.test
  assert test.waveforms.shape == (563, 16000) and test.waveforms.dtype == np.float32
  listed = set((speech_commands_sample_root / "testing_list.txt").read_text().split())
  assert set(test.files) <= listed
  for f, label, speaker in zip(test.files, test.labels, test.speakers):
    word, name = f.split("/")
    assert sample.class_names[label] == word
    assert speaker == name.split("_nohash_")[0] and len(speaker) == 8
  assert set(test.labels.tolist()) == set(range(35))
  np.testing.assert_allclose(test.durations, 1.0)


def test_real_sample_decoding_is_lossless_at_16k(sample, speech_commands_sample_root):
  for i in (0, 281, 562):
    raw, rate = sf.read(str(speech_commands_sample_root / sample.test.files[i]), dtype="float32")
    assert rate == 16000 and raw.shape == (16000,)
    np.testing.assert_array_equal(sample.test.waveforms[i], raw)


def _make_root(
  tmp_path: pathlib.Path,
  sample_root: pathlib.Path,
  clips: list[str],
  validation: list[str],
  testing: list[str],
) -> pathlib.Path:
  """A Speech Commands folder with all 35 word folders, some real clips and our own lists."""
  root = tmp_path / "speech_commands_v2"
  for w in speech_commands.WORDS:
    (root / w).mkdir(parents=True)
  for c in clips:
    shutil.copyfile(sample_root / c, root / c)
  (root / "_background_noise_").mkdir()
  shutil.copyfile(
    sample_root / "_background_noise_" / "white_noise.wav",
    root / "_background_noise_" / "white_noise.wav",
  )
  (root / "validation_list.txt").write_text("\n".join(validation))
  (root / "testing_list.txt").write_text("\n".join(testing) + "\n")
  return root


@pytest.fixture
def small(tmp_path, speech_commands_sample_root):
  clips = sorted(
    str(p.relative_to(speech_commands_sample_root))
    for w in ("yes", "no", "zero")
    for p in sorted((speech_commands_sample_root / w).glob("*.wav"))[:3]
  )
  validation = [clips[0], clips[4], "yes/notpresent_nohash_0.wav"]  # absent entries are ignored
  testing = [clips[1], clips[8]]
  return _make_root(tmp_path, speech_commands_sample_root, clips, validation, testing), clips


def test_split_logic_with_own_lists(small):
  root, clips = small
  ds = data.load_dataset("speech_commands", root.parent, progress=False)
  assert ds.validation.files == tuple(sorted([clips[0], clips[4]]))
  assert ds.test.files == tuple(sorted([clips[1], clips[8]]))
  assert ds.train.files == tuple(sorted(set(clips) - {clips[0], clips[4], clips[1], clips[8]}))
  assert ds.train.waveforms.shape == (5, 16000)
  for split in (ds.train, ds.validation, ds.test):
    for i, f in enumerate(split.files):
      assert ds.class_names[split.labels[i]] == f.split("/")[0]
      np.testing.assert_array_equal(split.waveforms[i], decode.load_clip(root / f))
  # The dataset folder itself works as data_root too.
  assert data.load_dataset("speech_commands", root, progress=False).train.files == ds.train.files


def test_unknown_class_folder_rejected_or_skipped(small):
  root, _ = small
  helpers.write_wav(root / "maybe" / "abcd1234_nohash_0.wav", helpers.tone(300, 1, 16000), 16000)
  with pytest.raises(ValueError, match="maybe: unknown class folder"):
    data.load_dataset("speech_commands", root, progress=False)
  ds = data.load_dataset("speech_commands", root, on_error="skip", progress=False)
  assert ("maybe" in [s[0] for s in ds.skipped]) and len(ds.class_names) == 35
  assert not any(f.startswith("maybe/") for f in ds.train.files)


def test_bad_file_name_is_named(small):
  root, _ = small
  helpers.write_wav(root / "yes" / "no_speaker_marker.wav", helpers.tone(300, 1, 16000), 16000)
  with pytest.raises(ValueError, match="yes/no_speaker_marker.wav.*_nohash_"):
    data.load_dataset("speech_commands", root, progress=False)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_partial_copy_loads_with_a_warning_naming_the_missing_words(small, caplog, on_error):
  root, clips = small
  missing = speech_commands.WORDS[:17]  # 18 of the 35 words stay, as in the issue
  assert not {c.split("/")[0] for c in clips} & set(missing)
  for w in missing:
    shutil.rmtree(root / w)
  with caplog.at_level("WARNING", logger="bilevel_jax"):
    ds = data.load_dataset("speech_commands", root, on_error=on_error, progress=False)
  assert ds.class_names == speech_commands.WORDS and ds.missing_classes == missing
  assert ds.skipped == ()
  assert len(ds.train.files) + len(ds.validation.files) + len(ds.test.files) == len(clips)
  warning = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
  assert "17 of the 35 words have no folder" in warning
  assert all(w in warning for w in missing)
  for split in (ds.train, ds.test):
    for f, label in zip(split.files, split.labels):
      assert speech_commands.WORDS[label] == f.split("/")[0]


@pytest.mark.parametrize("missing", ["validation_list.txt", "testing_list.txt"])
def test_missing_split_list_is_an_error_even_in_skip_mode(small, missing):
  root, _ = small
  (root / missing).unlink()
  for on_error in ("raise", "skip"):
    with pytest.raises(FileNotFoundError, match=f"Missing split list .*{missing}"):
      data.load_dataset("speech_commands", root, on_error=on_error, progress=False)


def test_no_speech_commands_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="No Speech Commands folder"):
    data.load_dataset("speech_commands", tmp_path, progress=False)


def test_tfds_route_gives_a_clear_error_without_tensorflow_datasets(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
  with pytest.raises(ImportError, match="12 classes"):
    data.load_dataset("speech_commands", source="tfds")
  with pytest.raises(ValueError, match="only 'speech_commands'"):
    data.load_dataset("fsdd", source="tfds")
