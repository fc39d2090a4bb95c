"""FSDD on the real data (official split), the waveform cache, and the opt-in download."""

from __future__ import annotations

import collections
import functools
import http.server
import os
import pathlib
import threading
import zipfile

import librosa
import numpy as np
import pytest
import soundfile as sf

from bilevel_jax import data
from bilevel_jax.data import decode
from bilevel_jax.utils import paths
from tests.data import helpers


@pytest.fixture(scope="module")
def fsdd(fsdd_root):
  return data.load_dataset("fsdd", fsdd_root.parent, progress=False)


def test_official_split_labels_and_speakers(fsdd):
  assert fsdd.name == "fsdd" and fsdd.class_names == tuple("0123456789")
  assert fsdd.validation is None and fsdd.skipped == ()
  assert fsdd.train.waveforms.shape == (2700, 16000) and fsdd.test.waveforms.shape == (300, 16000)
  assert fsdd.train.waveforms.dtype == np.float32
  for split, lo, hi, per_class in ((fsdd.train, 5, 49, 270), (fsdd.test, 0, 4, 30)):
    names = [pathlib.PurePosixPath(f).stem.split("_") for f in split.files]
    assert all(f.startswith("recordings/") for f in split.files)
    assert {int(n[2]) for n in names} == set(range(lo, hi + 1))
    np.testing.assert_array_equal(split.labels, [int(n[0]) for n in names])
    np.testing.assert_array_equal(split.speakers, [n[1] for n in names])
    assert collections.Counter(split.labels.tolist()) == {d: per_class for d in range(10)}
    assert len(set(split.speakers.tolist())) == 6
    assert split.labels.dtype == np.int32
  assert not set(fsdd.train.files) & set(fsdd.test.files)


def test_waveforms_match_librosa_load_and_durations(fsdd, fsdd_root):
  for i in (0, 1234, 2699):
    path = fsdd_root / fsdd.train.files[i]
    y, _ = librosa.load(path, sr=16000, res_type="soxr_hq")  # independent decode + resample
    n = len(y)
    want = (
      np.pad(y, ((16000 - n) // 2, 16000 - n - (16000 - n) // 2))
      if n < 16000
      else y[(n - 16000) // 2 : (n - 16000) // 2 + 16000]
    )
    np.testing.assert_allclose(fsdd.train.waveforms[i], want, atol=1e-5)
    assert fsdd.train.durations[i] == pytest.approx(sf.info(str(path)).duration)
  assert 0.1 < fsdd.train.durations.min() and fsdd.train.durations.max() < 2.5
  assert np.isfinite(fsdd.test.waveforms).all() and np.abs(fsdd.test.waveforms).max() <= 1.0


def test_second_load_is_memory_mapped_from_one_cache_file(fsdd, fsdd_root):
  before = {p: p.stat().st_mtime_ns for p in (paths.cache_root() / "waveforms").glob("*.npy")}
  again = data.load_dataset("fsdd", fsdd_root.parent, progress=False)
  assert isinstance(again.train.waveforms, np.memmap)
  # Both splits are views of one file, which was neither rewritten nor joined by another.
  cache_file = pathlib.Path(again.train.waveforms.filename)
  assert cache_file == pathlib.Path(again.test.waveforms.filename) and cache_file in before
  after = {p: p.stat().st_mtime_ns for p in (paths.cache_root() / "waveforms").glob("*.npy")}
  assert after == before
  np.testing.assert_array_equal(again.test.waveforms, fsdd.test.waveforms)
  assert again.train.files == fsdd.train.files


def test_cache_rebuilt_when_a_source_file_changes(tmp_path):
  root = helpers.make_fsdd(tmp_path / "d")
  first = data.load_dataset("fsdd", root, progress=False)
  i = first.train.files.index("recordings/1_bob_5.wav")
  target = root / first.train.files[i]
  helpers.write_wav(target, helpers.tone(1000, 0.5, 8000, amp=0.9), 8000)
  os.utime(target, ns=(1, 1))  # a different mtime even on coarse-clock file systems
  second = data.load_dataset("fsdd", root, progress=False)
  np.testing.assert_allclose(second.train.waveforms[i], decode.load_clip(target), atol=1e-7)
  assert not np.allclose(second.train.waveforms[i], first.train.waveforms[i])
  j = first.train.files.index("recordings/0_alice_6.wav")
  np.testing.assert_array_equal(second.train.waveforms[j], first.train.waveforms[j])


def test_cache_false_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
  ds = data.load_dataset("fsdd", helpers.make_fsdd(tmp_path / "d"), cache=False, progress=False)
  assert ds.train.waveforms.shape == (12, 16000) and ds.test.waveforms.shape == (12, 16000)
  assert not list((tmp_path / "cache").rglob("*.npy"))


def _archive(tmp_path: pathlib.Path) -> pathlib.Path:
  """A GitHub-like archive: prefix/recordings/*.wav plus files that must not be extracted."""
  src = helpers.make_fsdd(tmp_path / "src", takes=(0, 7), digits=(4, 5))
  path = tmp_path / "serve" / "master.zip"
  path.parent.mkdir()
  with zipfile.ZipFile(path, "w") as z:
    for f in sorted((src / "recordings").iterdir()):
      z.write(f, f"free-spoken-digit-dataset-master/recordings/{f.name}")
    z.writestr("free-spoken-digit-dataset-master/README.md", "readme")
    z.writestr("free-spoken-digit-dataset-master/recordings/../../evil_1_2.wav", b"x")
  return path


def _check_downloaded(ds, dest: pathlib.Path) -> None:
  assert ds.train.waveforms.shape == (4, 16000) and ds.test.waveforms.shape == (4, 16000)
  assert sorted(set(ds.train.labels.tolist())) == [4, 5]
  assert sorted(p.name for p in (dest / "fsdd" / "recordings").iterdir())[0] == "4_alice_0.wav"
  assert not list(dest.rglob("evil*")) and not list(dest.rglob("README.md"))


def test_download_from_file_url(tmp_path):
  url = _archive(tmp_path).as_uri()
  dest = tmp_path / "data"
  dest.mkdir()
  ds = data.load_dataset("fsdd", dest, download=True, url=url, progress=False)
  _check_downloaded(ds, dest)


def test_download_from_local_http_server(tmp_path):
  archive = _archive(tmp_path)
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
  handler.log_message = lambda *a, **k: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    dest = tmp_path / "data"
    dest.mkdir()
    url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    ds = data.load_dataset("fsdd", dest, download=True, url=url, progress=False)
    _check_downloaded(ds, dest)
  finally:
    server.shutdown()
    server.server_close()


def test_download_errors_name_the_url(tmp_path):
  dest = tmp_path / "data"
  dest.mkdir()
  missing = (tmp_path / "nope.zip").as_uri()
  with pytest.raises(OSError, match="nope.zip"):
    data.load_dataset("fsdd", dest, download=True, url=missing, progress=False)
  not_zip = tmp_path / "page.zip"
  not_zip.write_text("<html>rate limited</html>")
  with pytest.raises(ValueError, match="not a zip archive"):
    data.load_dataset("fsdd", dest, download=True, url=not_zip.as_uri(), progress=False)
  assert not (dest / "fsdd" / "recordings").exists()


def test_no_download_without_opt_in(tmp_path):
  with pytest.raises(FileNotFoundError, match="download=True"):
    data.load_dataset("fsdd", tmp_path, progress=False)
