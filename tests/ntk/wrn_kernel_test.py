"""WRN infinite-width kernel: a slow float64 reference, structure, streaming, Monte-Carlo."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tests.ntk import finite_width
from bilevel_jax.ntk import kernel_matrix as km
from bilevel_jax.ntk import arccos
from bilevel_jax.ntk import wrn_kernel as wk
from tests.ntk.conftest import downsample


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _reference(
  x1,
  x2,
  depth,
  shortcut_size=1,
  w_std=1.0,
  b_std=0.0,
  activate_shortcut=False,
  slope=0.0,
  final_activation=False,
):
  """Slow, obvious per-pair recursion in float64 (reduce_window, jnp.arccos, no tricks).

  Activation phi(u) = max(u, slope * u) = slope * u + (1 - slope) * relu(u), expanded term by
  term: E[phi phi] = slope^2 q12 + 2 slope (1 - slope) q12 / 2 + (1 - slope)^2 E[relu relu].
  """
  n = (depth - 4) // 6

  def box(m, k, s):
    return lax.reduce_window(m, 0.0, lax.add, (k, k), (s, s), "SAME") / (k * k)

  def conv(m, k, s):
    return w_std**2 * box(m, k, s) + b_std**2

  def relu(q11, q22, q12, t12):
    norm = jnp.sqrt(q11 * q22)  # silent log-mel pixels are exactly 0
    rho = jnp.clip(jnp.where(norm > 0, q12 / jnp.where(norm > 0, norm, 1.0), 0.0), -1.0, 1.0)
    theta = jnp.arccos(rho)
    a, b = slope, 1.0 - slope
    relu12 = (
      jnp.sqrt(q11 * q22) * (jnp.sin(theta) + (math.pi - theta) * jnp.cos(theta)) / (2 * math.pi)
    )
    phi12 = a * a * q12 + a * b * q12 + b * b * relu12
    dphi12 = a * a + a * b + b * b * (math.pi - theta) / (2 * math.pi)
    diag = a * a + a * b + b * b / 2
    return diag * q11, diag * q22, phi12, t12 * dphi12

  def layer_conv(st, k, s):
    q11, q22, q12, t12 = st
    q12n = conv(q12, k, s)
    return conv(q11, k, s), conv(q22, k, s), q12n, w_std**2 * box(t12, k, s) + q12n

  @jax.jit
  def pair(a, b):
    c = a.shape[-1]
    q11, q22, q12 = [
      conv(m, 3, 1) for m in ((a * a).sum(-1) / c, (b * b).sum(-1) / c, (a * b).sum(-1) / c)
    ]
    st = (q11, q22, q12, q12)
    for g in range(3):
      for i in range(n):
        s = 2 if g > 0 and i == 0 else 1
        act = relu(*st)
        h = layer_conv(relu(*layer_conv(act, 3, s)), 3, 1)
        sc = layer_conv(act if activate_shortcut else st, shortcut_size, s) if i == 0 else st
        st = tuple(u + v for u, v in zip(h, sc))
    if final_activation:
      st = relu(*st)
    nngp = st[2].mean()
    return jnp.stack([nngp, st[3].mean() + nngp])

  out = np.array([[pair(a.astype(np.float64), b.astype(np.float64)) for b in x2] for a in x1])
  return out[..., 0], out[..., 1]


@pytest.mark.parametrize(
  "shortcut_size,activate,activation,final",
  [
    (1, False, "relu", False),  # the legacy kernel
    (3, True, "relu", False),
    (1, False, "relu", True),
    (1, False, "leaky_relu", True),  # the default (trained WRN)
    (3, True, "leaky_relu", False),
  ],
)
def test_matches_slow_float64_reference(
  fsdd_log_mels, x64, shortcut_size, activate, activation, final
):
  x = downsample(fsdd_log_mels(5), 2)  # (5, 16, 16, 1)
  slope = 0.1 if activation == "leaky_relu" else 0.0
  want_nngp, want_ntk = _reference(
    x[:2], x[2:], 10, shortcut_size, activate_shortcut=activate, slope=slope, final_activation=final
  )
  kw = dict(
    depth=10,
    shortcut_size=shortcut_size,
    activate_shortcut=activate,
    activation=activation,
    leaky_slope=0.1,
    final_activation=final,
  )
  x64_in = x.astype(np.float64)
  got64 = wk.wrn_kernel(x64_in[:2], x64_in[2:], **kw)  # float64: exact arccos
  assert got64.ntk.dtype == jnp.float64
  np.testing.assert_allclose(got64.nngp, want_nngp, rtol=1e-10)
  np.testing.assert_allclose(got64.ntk, want_ntk, rtol=1e-10)
  jax.config.update("jax_enable_x64", False)  # the fast path runs in float32
  got = wk.wrn_kernel(x[:2], x[2:], **kw)
  assert got.ntk.dtype == jnp.float32
  np.testing.assert_allclose(got.nngp, want_nngp, rtol=2e-5)
  np.testing.assert_allclose(got.ntk, want_ntk, rtol=2e-5)


def test_relu_kernel_polynomial_arccos_is_float32_accurate(x64):
  rho = jnp.linspace(-1.0, 1.0, 20001)
  j, jdot = arccos.relu_kernel(rho)
  theta = jnp.arccos(rho)
  np.testing.assert_allclose(jdot, math.pi - theta, atol=5e-8)
  np.testing.assert_allclose(j, jnp.sin(theta) + (math.pi - theta) * rho, atol=5e-8)
  assert bool(jnp.all(jnp.isfinite(jnp.stack(arccos.relu_kernel(jnp.array([1.5, -3.0]))))))


def test_symmetric_and_psd_on_real_batch(fsdd_log_mels):
  x = fsdd_log_mels(16)
  k = km.kernel_matrix(x, kind="both", depth=10, tile=16, progress=False)
  full = km.kernel_matrix(x, x, kind="both", depth=10, tile=16, progress=False)  # no mirroring
  for mat, mat_full in zip(k, full):
    np.testing.assert_array_equal(mat, mat.T)
    np.testing.assert_allclose(mat_full, mat_full.T, rtol=1e-6)
    np.testing.assert_allclose(mat, mat_full, rtol=1e-6)
    eig = np.linalg.eigvalsh(mat.astype(np.float64))
    assert eig.min() >= -1e-5 * eig.max(), eig[:3]
  assert np.all(np.diag(k.ntk) > np.diag(k.nngp))  # NTK = NNGP + positive terms


def test_jit_equals_no_jit_and_fences_change_nothing(fsdd_log_mels):
  x = downsample(fsdd_log_mels(2), 4)  # (2, 8, 8, 1)
  cfg = wk.WRNKernelConfig(depth=10)
  jitted = wk.wrn_kernel(x, depth=10)  # our compiled program (fast math)
  inside_jit = jax.jit(lambda a: wk.wrn_kernel(a, depth=10, jit=False))(x)  # how callers embed it
  unfenced = jax.jit(lambda a: wk._tile_kernels(a, a, cfg, fence=False))(x)
  # float32: fusion / FMA choices differ slightly; near rho = 1 (the diagonal) arccos amplifies
  # rounding (sqrt(1 - rho)), one more time with the final activation: up to 2.7e-5 measured.
  for other in (inside_jit, unfenced):
    np.testing.assert_allclose(jitted.ntk, other.ntk, rtol=5e-5)
    np.testing.assert_allclose(jitted.nngp, other.nngp, rtol=2e-5)


@pytest.mark.slow
def test_jit_equals_op_by_op(fsdd_log_mels):
  x = downsample(fsdd_log_mels(2), 4)  # ~12 s: every eager op compiles
  jitted = wk.wrn_kernel(x, depth=10)
  eager = wk.wrn_kernel(x, depth=10, jit=False)
  np.testing.assert_allclose(jitted.ntk, eager.ntk, rtol=2e-5)
  np.testing.assert_allclose(jitted.nngp, eager.nngp, rtol=2e-5)


def test_tile_streaming_equals_one_shot(fsdd_log_mels, monkeypatch):
  x = downsample(fsdd_log_mels(7), 2)
  x1, x2 = x[:5], x[5:]
  one_shot = wk.wrn_kernel(x1, x, depth=10)
  monkeypatch.setattr(km, "ROW_BLOCK", 4)  # two row blocks: input statistics are recomputed
  calls = []
  compiled = wk._pair_kernels_jit._cache_size()
  tiled = km.kernel_matrix(
    x1,
    x,
    kind="both",
    depth=10,
    tile=(2, 4),
    progress=False,
    callback=lambda d, t: calls.append((d, t)),
  )
  assert calls[-1] == (6, 6)  # ceil(5/2) x ceil(7/4) tiles
  assert wk._pair_kernels_jit._cache_size() - compiled <= 1  # one program per tile shape
  # Other tile shapes are other programs (fast math: other summation orders): float32 noise.
  np.testing.assert_allclose(tiled.ntk, one_shot.ntk, rtol=2e-5)
  np.testing.assert_allclose(tiled.nngp, one_shot.nngp, rtol=2e-5)
  sym = km.kernel_matrix(x, depth=10, tile=4, progress=False)  # upper tiles only, mirrored
  np.testing.assert_allclose(sym[:5], one_shot.ntk, rtol=2e-5)
  rows = km.kernel_rows(x1, x2, km.make_config(depth=10), tile=(2, 4))
  np.testing.assert_allclose(rows[0], one_shot.ntk[:, 5:], rtol=2e-5)


@pytest.mark.parametrize(
  "bad,match",
  [
    (dict(x1=np.zeros((3, 8, 8)), depth=10), "images"),
    (dict(x1=np.full((2, 8, 8, 1), np.nan, np.float32), depth=10), "NaN"),
    (dict(x1=np.zeros((2, 8, 8, 1), np.float32), depth=12), "6n \\+ 4"),
    (dict(x1=np.zeros((2, 8, 8, 1), np.float32), depth=10, kind="rbf"), "kind"),
    (dict(x1=np.zeros((2, 8, 8, 1), np.float32), depth=10, shortcut_size=2), "shortcut_size"),
  ],
)
def test_bad_inputs_raise_clear_errors(bad, match):
  with pytest.raises(ValueError, match=match):
    km.kernel_matrix(progress=False, **bad)


@pytest.mark.slow
def test_matches_monte_carlo_finite_width(fsdd_log_mels):
  # The default network (leaky ReLU 0.1, final activation): depth 10 on 16x16 inputs, width 128,
  # mean of 4 inits. Whole-network Monte Carlo resolves only several % (finite-width
  # fluctuations; the readout draw alone is sqrt(2 / 64) per init for the NNGP): the 1%-level
  # checks of each term are in activation_maps_test.py and test_matches_slow_float64_reference.
  x = jnp.asarray(downsample(fsdd_log_mels(4), 2))
  model = finite_width.WideResNetNTK(depth=10, channels=(128,) * 4, num_outputs=64)
  nngp, ntk = finite_width.monte_carlo_kernels(model, jax.random.key(0), x, x, num_inits=4)
  want = wk.wrn_kernel(x, depth=10)
  assert _rel(ntk, want.ntk) < 0.06
  assert _rel(nngp, want.nngp) < 0.08


@pytest.mark.slow
def test_matches_monte_carlo_depth28(fsdd_log_mels):
  # Width 256 (finite-width bias at depth 28 is ~+20% at width 64 and a few % at 256), 8 inits;
  # 8x8 block-averaged inputs keep it to ~1-2 min.
  x = jnp.asarray(downsample(fsdd_log_mels(3), 4))
  # 1024 readout outputs (cheap): with 16, the readout draw's noise (sqrt(2 / (16 * 8)) = 12.5%,
  # common to all entries) put the leaky + final-activation NNGP 17% low; with 1024 it is 5% low
  # and the legacy kernel 3% low (measured, key 1).
  model = finite_width.WideResNetNTK(depth=28, channels=(256,) * 4, num_outputs=1024)
  nngp, ntk = finite_width.monte_carlo_kernels(model, jax.random.key(1), x, x, num_inits=8)
  want = wk.wrn_kernel(x, depth=28)
  assert _rel(ntk, want.ntk) < 0.10
  assert _rel(nngp, want.nngp) < 0.15


def test_one_shot_and_row_block_entry_points_check_inputs_first():
  """Before the review: wrn_kernel ran NaN images through its fast-math program without a
  word, and kernel_rows computed a tile before an AttributeError for kind="rbf"."""
  x = np.zeros((2, 8, 8, 1), np.float32)
  bad = x.copy()
  bad[1, 3, 3, 0] = np.nan
  with pytest.raises(ValueError, match="x2 contains NaN"):
    wk.wrn_kernel(x, bad, depth=10)
  cfg = km.make_config(depth=10)
  with pytest.raises(ValueError, match="kind='rbf'"):
    km.kernel_rows(x, x, cfg, kind="rbf")
  with pytest.raises(ValueError, match="x1 contains NaN"):
    km.kernel_rows(bad, x, cfg)
  with pytest.raises(ValueError, match="share"):
    km.kernel_rows(x, x[:, :4], cfg)
