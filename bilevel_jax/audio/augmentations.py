"""Waveform augmentations in JAX (run inside jit, vmappable), as in the paper.

Each of the four augmentations is applied independently with probability 0.5:
  - amplitude: multiply by a gain g ~ U[0.8, 1.2];
  - speed: play u ~ U[0.8, 1.2] times faster about the clip centre c = 8000:
      y[n] = x[c + u (n - c)]  (linear interpolation, zeros outside the clip),
    so a tone at f Hz moves to u * f Hz and the clip stays 16000 samples
    (u > 1 leaves silence at both ends, u < 1 crops both ends);
  - time shift: delay by s ~ U{-4000, ..., 4000} samples (+-250 ms at 16 kHz), zero fill:
      y[n] = x[n - s]  (s > 0 moves the onset later);
  - background noise: a random 1 s crop of a random noise recording, scaled so that
      10 log10(mean(y^2) / mean(noise^2)) = snr,  snr ~ U[0, 40] dB,
    where y is the clip after the other augmentations (power over the whole 1 s window).
    A silent clip gets no noise (scale 0).
Order: speed and shift (one interpolation, y[n] = x[c + u (n - s - c)]), then gain, then noise.

Every function takes an explicit key; `augment(key, x, noise)[i]` equals
`augment_one(jax.random.split(key, B)[i], x[i], noise)`. The drawn parameters are exposed
through `sample_params` / `augment(..., return_params=True)` and can be replayed with
`apply_params`.

Pass `noise` ((K, L) float32 from `bilevel_jax.data.load_background_noise`, ~23 MB for the six
official recordings) as an argument of the jitted step, not as a closed-over constant, so it is
not baked into the compiled program.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.audio import features

PROB = 0.5
GAIN_RANGE = (0.8, 1.2)
SPEED_RANGE = (0.8, 1.2)
MAX_SHIFT = 4000  # samples = 250 ms at 16 kHz
SNR_RANGE_DB = (0.0, 40.0)


class AugmentParams(NamedTuple):
  """Drawn parameters of one clip (scalars), or of a batch (each field (B,))."""

  apply_gain: jax.Array  # bool
  gain: jax.Array  # float, multiplier
  apply_speed: jax.Array  # bool
  speed: jax.Array  # float, playback-rate factor u
  apply_shift: jax.Array  # bool
  shift: jax.Array  # int32, samples (positive = later)
  apply_noise: jax.Array  # bool
  snr_db: jax.Array  # float, dB
  noise_index: jax.Array  # int32, row of the noise array
  noise_offset: jax.Array  # int32, start sample of the crop


def identity_params(batch_size: int | None = None) -> AugmentParams:
  """Parameters that leave a clip unchanged (all flags off), for replaying single effects."""
  shape = () if batch_size is None else (batch_size,)
  f = jnp.zeros(shape, bool)
  one = jnp.ones(shape, jnp.float32)
  zero_i = jnp.zeros(shape, jnp.int32)
  return AugmentParams(f, one, f, one, f, zero_i, f, jnp.zeros(shape, jnp.float32), zero_i, zero_i)


def _sample_one(key: jax.Array, num_noise: int, noise_length: int, prob) -> AugmentParams:
  if noise_length < features.NUM_SAMPLES:
    raise ValueError(
      f"noise recordings have {noise_length} samples; expected at least "
      f"{features.NUM_SAMPLES} (1 s at 16 kHz)"
    )
  # One uniform draw per clip for everything (each separate draw costs a threefry to compile).
  u = jax.random.uniform(key, (10,), jnp.float32)

  def span(v, lo, hi):
    return lo + (hi - lo) * v

  def integer(v, n):  # uniform on {0, ..., n - 1}
    return jnp.minimum(jnp.floor(v * n), n - 1).astype(jnp.int32)

  return AugmentParams(
    apply_gain=u[0] < prob,
    gain=span(u[4], *GAIN_RANGE),
    apply_speed=u[1] < prob,
    speed=span(u[5], *SPEED_RANGE),
    apply_shift=u[2] < prob,
    shift=integer(u[6], 2 * MAX_SHIFT + 1) - MAX_SHIFT,
    apply_noise=u[3] < prob,
    snr_db=span(u[7], *SNR_RANGE_DB),
    noise_index=integer(u[8], num_noise),
    noise_offset=integer(u[9], noise_length - features.NUM_SAMPLES + 1),
  )


def sample_params(
  key: jax.Array, batch_size: int, noise_shape: tuple[int, int], prob=PROB
) -> AugmentParams:
  """Draws per-clip parameters, each field (batch_size,); example i uses split(key)[i]."""
  keys = jax.random.split(key, batch_size)
  return jax.vmap(lambda k: _sample_one(k, noise_shape[0], noise_shape[1], prob))(keys)


def _warp(x: jax.Array, speed: jax.Array, shift: jax.Array) -> jax.Array:
  """y[n] = x[c + speed (n - shift - c)] by linear interpolation, zero outside. x: (T,)."""
  t = x.shape[0]
  # pos = c + u (n - s - c) = (n - s) + (u - 1) m with the integer m = n - s - c. Splitting the
  # exact integer part off keeps float32 rounding of the fractional part at ~1e-4 samples
  # (instead of ~5e-4 when forming c + u m directly).
  m = jnp.arange(t, dtype=jnp.int32) - shift.astype(jnp.int32) - t // 2
  d = (speed.astype(x.dtype) - 1.0) * m.astype(x.dtype)  # |d| <= 0.2 |m|
  d_int = jnp.floor(d)
  i0 = m + t // 2 + d_int.astype(jnp.int32)
  frac = d - d_int
  i1 = i0 + 1

  def tap(i):
    valid = (i >= 0) & (i < t)
    return jnp.where(valid, x[jnp.clip(i, 0, t - 1)], 0.0)

  return tap(i0) * (1.0 - frac) + tap(i1) * frac


def noise_crop(noise: jax.Array, index: jax.Array, offset: jax.Array) -> jax.Array:
  """noise[index, offset:offset + 16000] for noise (K, L)."""
  return jax.lax.dynamic_slice(noise, (index, offset), (1, features.NUM_SAMPLES))[0]


def _apply_one(p: AugmentParams, x: jax.Array, noise: jax.Array) -> jax.Array:
  speed = jnp.where(p.apply_speed, p.speed, 1.0)
  shift = jnp.where(p.apply_shift, p.shift, 0)
  y = _warp(x, speed, shift)
  y = y * jnp.where(p.apply_gain, p.gain, 1.0).astype(y.dtype)
  seg = noise_crop(noise, p.noise_index, p.noise_offset).astype(y.dtype)
  p_sig = jnp.mean(y**2)
  p_noise = jnp.mean(seg**2)
  ratio = 10.0 ** (p.snr_db.astype(y.dtype) / 10.0)
  scale = jnp.sqrt(p_sig / jnp.where(p_noise > 0, p_noise * ratio, 1.0))
  scale = jnp.where(p.apply_noise & (p_noise > 0), scale, 0.0)
  return y + scale * seg


def _check(waveforms: jax.Array, noise: jax.Array) -> None:
  chex.assert_rank(noise, 2)
  if noise.shape[1] < features.NUM_SAMPLES:
    raise ValueError(
      f"noise has shape {noise.shape}; expected (K, L) with L >= {features.NUM_SAMPLES}"
    )
  chex.assert_shape(waveforms, (None, features.NUM_SAMPLES))


def apply_params(params: AugmentParams, waveforms: jax.Array, noise: jax.Array) -> jax.Array:
  """Applies drawn parameters (fields (B,)). waveforms: (B, 16000), noise: (K, L)."""
  _check(waveforms, noise)
  return jax.vmap(_apply_one, in_axes=(0, 0, None))(params, waveforms, noise)


def augment_one(key: jax.Array, waveform: jax.Array, noise: jax.Array, prob=PROB) -> jax.Array:
  """Augments one clip. waveform: (16000,), noise: (K, L) -> (16000,)."""
  chex.assert_shape(waveform, (features.NUM_SAMPLES,))
  return _apply_one(_sample_one(key, noise.shape[0], noise.shape[1], prob), waveform, noise)


def augment(
  key: jax.Array, waveforms: jax.Array, noise: jax.Array, *, prob=PROB, return_params: bool = False
):
  """Augments a batch. waveforms: (B, 16000), noise: (K, L) at 16 kHz -> (B, 16000).

  With `return_params=True` returns (augmented, AugmentParams with fields (B,)).
  """
  _check(waveforms, noise)
  params = sample_params(key, waveforms.shape[0], noise.shape, prob)
  out = apply_params(params, waveforms, noise)
  return (out, params) if return_params else out


def augment_and_featurize(
  key: jax.Array, waveforms: jax.Array, noise: jax.Array, *, prob=PROB
) -> jax.Array:
  """The training/selection input pipeline: (B, 16000) -> (B, 32, 32, 1); call inside jit."""
  return features.featurize(augment(key, waveforms, noise, prob=prob))


def augment_and_featurize_groups(
  keys, waveform_groups, noise: jax.Array, *, prob=PROB
) -> list[jax.Array]:
  """`[augment_and_featurize(k, w, noise) for k, w in zip(keys, waveform_groups)]`, faster.

  Each group's parameters come from its own key exactly as in `augment_and_featurize`, and
  each group's log-mel is computed on its own, so the outputs are the same (bitwise in our
  checks). The groups are augmented as one concatenated batch: on XLA:CPU this materialises the
  gathered clips once instead of fusing the dataset gather into every interpolation tap.
  waveform_groups: [(B_g, 16000)] -> [(B_g, 32, 32, 1)].
  """
  if len(keys) != len(waveform_groups):
    raise ValueError(f"got {len(keys)} keys for {len(waveform_groups)} waveform groups")
  for w in waveform_groups:
    _check(w, noise)
  params = [sample_params(k, w.shape[0], noise.shape, prob) for k, w in zip(keys, waveform_groups)]
  params = jax.tree.map(lambda *v: jnp.concatenate(v), *params)
  augmented = apply_params(params, jnp.concatenate(waveform_groups), noise)
  sizes = [w.shape[0] for w in waveform_groups]
  starts = np.cumsum([0] + sizes[:-1]).tolist()
  # Log-mel per group: the FFT of 192 frames at once was ~10% slower than of 64 + 128.
  return [features.featurize(augmented[a : a + n]) for a, n in zip(starts, sizes)]


# Callers that augment several groups at once (ssl.train's MixMatch step) look this up.
augment_and_featurize.groups = augment_and_featurize_groups
