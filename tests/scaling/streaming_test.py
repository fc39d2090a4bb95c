"""Streaming pools from disk: chunked readers/writers, chunked features, streamed selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.bilevel import select as S
from bilevel_jax.scaling import streaming, synthetic as syn


def test_row_file_roundtrip_in_chunks(tmp_path):
  x = np.arange(7 * 3 * 2, dtype=np.float32).reshape(7, 3, 2)
  w = streaming.RowWriter(tmp_path / "x.npy", x.shape)
  for s, e in streaming.chunks(7, 3):
    w.append(x[s:e])
  w.close()
  np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x)
  f = streaming.RowFile(tmp_path / "x.npy")
  buf = np.empty((3, 3, 2), np.float32)
  np.testing.assert_array_equal(f.read(5, 7, buf), x[5:7])
  with pytest.raises(ValueError, match="outside"):
    f.read(6, 9)
  bad = streaming.RowWriter(tmp_path / "y.npy", (4, 2))
  bad.append(np.zeros((3, 2)))
  with pytest.raises(ValueError, match="wrote 3 of 4 rows"):
    bad.close()


def test_streamed_features_match_direct(tmp_path):
  rng = np.random.default_rng(0)
  wav = rng.normal(size=(37, 12)).astype(np.float32)
  np.save(tmp_path / "wav.npy", wav)
  featurize = lambda w: w.reshape(w.shape[0], 2, 2, 3)
  kern = lambda a, b: jnp.exp(
    -0.1 * jnp.sum((a.reshape(a.shape[0], 1, -1) - b.reshape(1, b.shape[0], -1)) ** 2, -1)
  )
  u = featurize(jnp.asarray(wav[:5]))
  mm = jnp.asarray(rng.normal(size=(5, 5)).astype(np.float32))
  info = streaming.stream_nystrom_features(
    streaming.RowFile(tmp_path / "wav.npy"),
    tmp_path / "z.npy",
    featurize,
    kern,
    u,
    mm,
    chunk_rows=8,
  )
  want = np.asarray(kern(featurize(jnp.asarray(wav)), u) @ mm)
  np.testing.assert_allclose(np.load(tmp_path / "z.npy"), want, rtol=1e-5, atol=1e-5)
  assert info["rows"] == 37


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_streamed_selection_picks_as_in_memory(tmp_path, reduction):
  spec = syn.SyntheticSpec(n=100, m=8, c=3, copies=2, seed=5)
  z, y, t = syn.pool(spec)
  np.save(tmp_path / "z.npy", z)
  np.save(tmp_path / "y.npy", y)
  lab = np.array([3, 7, 11], np.int32)
  params = syn.bank_params(z, 2)
  bank = np.stack([np.asarray(syn.bank_fn(params, jax.random.key(i), jnp.int32(i))) for i in lab])
  kw = dict(b=5, inner_steps=30, cg_steps=10, batch_size=16, lr=0.05, loss_reduction=reduction)
  key = jax.random.key(2)
  ref = S.select_batch(key, z, y, lab, t[lab], bank, syn.bank_fn, params, **kw)
  copies_fn = lambda k, i, row: syn.bank_fn(
    {"z": row[None], "tau": params["tau"], "copies": params["copies"]}, k, 0
  )
  got = streaming.select_streamed(
    key,
    streaming.RowFile(tmp_path / "z.npy"),
    streaming.RowFile(tmp_path / "y.npy"),
    lab,
    t[lab],
    bank,
    copies_fn,
    chunk_rows=32,
    **kw,
  )
  np.testing.assert_array_equal(got.indices, np.asarray(ref.indices))
  np.testing.assert_allclose(got.scores, np.asarray(ref.scores), rtol=1e-2)
  assert not set(got.indices.tolist()) & set(lab.tolist())
  assert set(got.stage_seconds) == {"validate", "inner", "outer_grad", "cg", "scoring"}
  with pytest.raises(ValueError, match="b=200"):
    streaming.select_streamed(
      key,
      streaming.RowFile(tmp_path / "z.npy"),
      streaming.RowFile(tmp_path / "y.npy"),
      lab,
      t[lab],
      bank,
      copies_fn,
      b=200,
    )


def _files(tmp_path, z, y):
  np.save(tmp_path / "z.npy", z)
  np.save(tmp_path / "y.npy", y)
  return streaming.RowFile(tmp_path / "z.npy"), streaming.RowFile(tmp_path / "y.npy")


def test_streamed_selection_rejects_bad_inputs_before_selecting(tmp_path):
  """Before the review: duplicate labeled indices were accepted (the point entered the inner
  problem twice), out-of-range labels gave an IndexError, NaN features / non-distribution
  pseudo-labels went unchecked, chunk_rows=0 failed inside range()."""
  rng = np.random.default_rng(0)
  z = rng.normal(size=(40, 4)).astype(np.float32)
  y = rng.dirichlet(np.ones(3), 40).astype(np.float32)
  t = rng.integers(0, 3, 40).astype(np.int32)
  lab = np.array([3, 7], np.int32)
  bank = np.repeat(z[lab][:, None], 2, axis=1)
  copies_fn = lambda k, i, row: jnp.stack([row, row])
  kw = dict(b=2, inner_steps=2, cg_steps=2, batch_size=4, chunk_rows=16)

  def run(z=z, y=y, lab=lab, labels=t[lab], **changes):
    feats, pseudo = _files(tmp_path, z, y)
    return streaming.select_streamed(
      jax.random.key(0), feats, pseudo, lab, labels, bank, copies_fn, **{**kw, **changes}
    )

  with pytest.raises(ValueError, match=r"labeled_idx has duplicates: \[3\]"):
    run(lab=np.array([3, 3], np.int32))
  with pytest.raises(ValueError, match=r"labeled_labels must lie in \[0, c=3\)"):
    run(labels=np.array([0, 3], np.int32))
  bad_z = z.copy()
  bad_z[21, 2] = np.nan
  with pytest.raises(ValueError, match=r"features row 21 column 2 is nan"):
    run(z=bad_z)
  bad_y = y.copy()
  bad_y[33] *= 2.0
  with pytest.raises(ValueError, match=r"row 33 sums to 2"):
    run(y=bad_y)
  with pytest.raises(ValueError, match=r"chunk_rows must be a positive int, got 0"):
    run(chunk_rows=0)
  with pytest.raises(ValueError, match=r"uniform_fraction"):
    run(uniform_fraction=2.0)
  with pytest.raises(ValueError, match=r"lr must be a finite scalar > 0, got -0.1"):
    run(lr=-0.1)
  with pytest.raises(ValueError, match=r"cg_steps must be an int >= 1, got 0"):
    run(cg_steps=0)
