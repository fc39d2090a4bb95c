"""Infinite-width NNGP and NTK of a Wide ResNet without batch norm, in JAX.

Architecture (pre-activation WRN-d, the layout of MixMatch's WRN and of the neural-tangents
WideResnet example):
  conv3x3 stem -> 3 groups of n = (depth - 4) / 6 blocks -> [phi] -> Flatten -> Dense.
  block(x) = conv3x3(phi(conv3x3_s(phi(x)))) + shortcut(x), where shortcut is the identity
  except in the first block of every group, where it is a conv with the block's stride
  (kernel size `shortcut_size`: 1 as in WRN, 3 as in the neural-tangents example).
  Groups 2 and 3 stride 2 in their first block; every conv pads SAME. phi is the activation
  (`activation`: leaky ReLU with slope 0.1 as in the trained WRN by default, or ReLU); the
  final phi before the readout (`final_activation`, default on) is the trained WRN's last
  BN -> leaky ReLU without the BN.

What differs from the trained WRN (`models/wide_resnet.py`): no batch norm; Flatten + Dense
instead of global average pool + Dense (a Flatten readout needs only same-position covariances,
an average pool needs all position pairs); the NTK parameterization below instead of He/Glorot
initialisation; no conv biases by default (b_std = 0; the trained convs' biases start at 0 but
are trained); the shortcut conv sees phi(x) in every group's first block or in none
(`activate_shortcut`), the trained WRN only in the first group's. The legacy kernel (before
issue 13: ReLU, no final activation) is `activation="relu", final_activation=False`.

The activation maps (leaky ReLU from ReLU's arc-cosine kernels, in closed form) are in
`ntk.arccos`; the spatial passes over covariance maps (box filters, padding, fences) in
`ntk.spatial`.

Parameterization: standard NTK (neural-tangents' stax): a conv computes
  W_std / sqrt(k * k * C_in) * conv(x, w) + b_std * b, with w, b ~ N(0, 1);
the readout is the same with fan-in H * W * C. Defaults W_std = 1, b_std = 0 match stax's
defaults, so kernels agree with `stax.Conv(...)` / `stax.Dense(...)` built with default arguments.

Why this is cheap: a Flatten readout only needs same-position covariances (distinct filter taps
have independent weights), so a pair's kernel is two (H, W) maps (NNGP q and NTK t) pushed through
3x3 box filters, strides, the activation's arc-cosine update and residual sums. The per-input variance
maps depend on one input only: `input_stats` computes their normalizers (1 / sqrt(q) and
sqrt(q)) for every ReLU once per input, and `kernel_matrix` reuses them for every tile an input
is part of. The pair maps of a T1 x T2 tile are one packed array (2, H + 2, W + 2, T1, T2)
([q, t], with a stored zero border = the SAME padding), so each layer is one contiguous pass:
a block is three passes (relu; conv + relu; conv + shortcut), each one fused kernel writing
the packed array (XLA:CPU has no multi-output loop fusion: with two separate maps it
materialized rho and sqrt(1 - |rho|) as extra full-size maps in every ReLU). Each pass runs
as the taken branch of a data-dependent conditional (`spatial.fenced`) so XLA materializes it
once instead of fusing (and recomputing) it inside the 9 taps of the next conv. arccos is a
float32-accurate polynomial (`ntk.arccos`). Our own jitted programs are compiled
with `COMPILER_OPTIONS` (512-bit vectors and fast math: ~20% faster per tile, results within
~2e-7 of the default options). Measured on 2 shared cores: ~25-30 us of CPU per entry (NNGP +
NTK) in 16 x 16 tiles, memory-bound (a 2.4 MB packed map per pass at 32 x 32); the blocks are
unrolled (per-layer statistics differ), which also avoids XLA:CPU's slow loop bodies. See
benchmarks/results/ntk_*.json.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.ntk import arccos
from bilevel_jax.ntk import spatial

# Per-program XLA:CPU options of our own jitted kernels (a caller's jit uses its own options).
# Fast math keeps the kernels' float32 agreement with neural-tangents (see ntk_oracle.json):
# no NaN/inf reaches these programs (inputs are checked, zero variances are guarded).
COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": 512, "xla_cpu_enable_fast_math": True}
ACTIVATIONS = ("relu", "leaky_relu")
TRAINED_LEAKY_SLOPE = 0.1  # models/wide_resnet.py: nn.leaky_relu(x, negative_slope=0.1)


class WRNKernelConfig(NamedTuple):
  """Architecture and parameterization of the kernel (hashable: a static jit argument).

  Attributes:
    depth: WRN depth; (depth - 4) must be divisible by 6 (28 -> 4 blocks per group).
    w_std: weight std of every conv (stax `W_std`).
    b_std: bias std of every conv (stax `b_std`; 0 = no bias).
    readout_w_std: weight std of the Dense readout.
    readout_b_std: bias std of the Dense readout.
    shortcut_size: kernel size of the convolutional shortcuts (1 = WRN, 3 = stax example).
    activate_shortcut: if True the shortcut conv sees phi(x) (MixMatch's
      `activate_before_residual`), else the raw block input x (stax example).
    activation: "leaky_relu" (phi(u) = max(u, leaky_slope * u), the trained WRN's) or "relu".
    leaky_slope: slope a of the leaky ReLU for u < 0, 0 <= a < 1 (ignored for "relu").
    final_activation: phi before the readout, as the trained WRN (False: the legacy kernel).
  """

  depth: int = 28
  w_std: float = 1.0
  b_std: float = 0.0
  readout_w_std: float = 1.0
  readout_b_std: float = 0.0
  shortcut_size: int = 1
  activate_shortcut: bool = False
  activation: str = "leaky_relu"
  leaky_slope: float = TRAINED_LEAKY_SLOPE
  final_activation: bool = True

  def blocks_per_group(self) -> int:
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(
        f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {self.depth}."
      )
    return (self.depth - 4) // 6

  def slope(self) -> float:
    """Slope a of phi for u < 0 (0 for ReLU); raises ValueError on a bad activation or slope."""
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation={self.activation!r}; expected one of {ACTIVATIONS}.")
    if self.activation == "relu":
      return 0.0
    if not 0.0 <= self.leaky_slope < 1.0:
      raise ValueError(f"leaky_slope={self.leaky_slope}; expected 0 <= slope < 1.")
    return float(self.leaky_slope)

  def validate(self) -> "WRNKernelConfig":
    self.blocks_per_group()
    self.slope()
    return self

  def is_legacy(self) -> bool:
    """The kernel before issue 13: ReLU and no final activation."""
    return self.activation == "relu" and not self.final_activation


class Kernels(NamedTuple):
  nngp: jax.Array  # (N1, N2)
  ntk: jax.Array  # (N1, N2)


class InputStats(NamedTuple):
  """Per-input normalizers of every activation, in network order (2 per block, then 1 if
  `final_activation`).

  rsqrt[l], sqrt[l]: (H_l + 2, W_l + 2, T) maps 1 / sqrt(q) (0 where q = 0) and
  (1 - a) sqrt(q / (2 pi)) of the pre-activation variance q of activation l (a: leaky slope,
  0 for ReLU), with a zero border.
  """

  rsqrt: tuple[jax.Array, ...]
  sqrt: tuple[jax.Array, ...]


def _strides(cfg: WRNKernelConfig):
  """(stride, first block of its group) of every block, in network order."""
  n = cfg.blocks_per_group()
  return [(2 if (g > 0 and i == 0) else 1, i == 0) for g in range(3) for i in range(n)]


def input_stats(x: jax.Array, cfg: WRNKernelConfig) -> InputStats:
  """Normalizers of each input. x: (T, H, W, C) -> InputStats of (H_l + 2, W_l + 2, T) maps."""
  w_var, b_var = cfg.w_std**2, cfg.b_std**2
  slope = cfg.slope()
  gain = 0.5 * (1.0 + slope * slope)  # E[phi(u)^2] / E[u^2]
  x = jnp.moveaxis(x, 0, -2)  # (H, W, T, C)
  conv = lambda q, k, s: spatial.pad1(w_var / (k * k) * spatial.box_filter(q, k, s) + b_var)
  q = conv(spatial.pad1(jnp.sum(x * x, -1) / x.shape[-1]), 3, 1)  # stem; / C as in stax
  rs, ss = [], []
  for stride, first in _strides(cfg):
    a = gain * q
    h = conv(a, 3, stride)
    for v in (q, h):
      rs.append(arccos.safe_rsqrt(v))
      ss.append(arccos.scaled_sqrt(v, slope))
    if first:
      q = conv(gain * h, 3, 1) + conv(a if cfg.activate_shortcut else q, cfg.shortcut_size, stride)
    else:
      q = conv(gain * h, 3, 1) + q
  if cfg.final_activation:
    rs.append(arccos.safe_rsqrt(q))
    ss.append(arccos.scaled_sqrt(q, slope))
  return InputStats(tuple(rs), tuple(ss))


def _pair_kernels(
  x1: jax.Array,
  x2: jax.Array,
  s1: InputStats,
  s2: InputStats,
  cfg: WRNKernelConfig,
  fence: bool = True,
) -> Kernels:
  """Kernels of all T1 x T2 pairs of a tile. x1: (T1, H, W, C), x2: (T2, H, W, C).

  s1, s2: `input_stats` of x1 and x2. fence: materialize every pass (see `spatial.fenced`);
  False only for comparisons.
  """
  one = spatial.always_true(x1) if fence else None
  w_var, b_var = cfg.w_std**2, cfg.b_std**2
  slope = cfg.slope()
  unpad = lambda m: m[1:-1, 1:-1]

  def stem(x1, x2):
    q12 = jnp.einsum("hwic,hwjc->hwij", jnp.moveaxis(x1, 0, -2), jnp.moveaxis(x2, 0, -2))
    q = w_var / 9 * spatial.box_filter(spatial.pad1(q12 / x1.shape[-1]), 3, 1) + b_var
    return spatial.pad12(jnp.stack([q, q]))  # no NTK term before the stem

  def relu(s, l):
    return arccos.pair_update(s[0], s[1], s1.rsqrt[l], s2.rsqrt[l], s1.sqrt[l], s2.sqrt[l], slope)

  def conv_relu(a, l, stride):
    q, t = spatial.conv_pair(a, 3, stride, w_var, b_var)
    return spatial.pad12(
      arccos.pair_update(
        q, t, unpad(s1.rsqrt[l]), unpad(s2.rsqrt[l]), unpad(s1.sqrt[l]), unpad(s2.sqrt[l]), slope
      )
    )

  def residual(h, shortcut, conv_shortcut):
    q, t = spatial.conv_pair(h, 3, 1, w_var, b_var)
    if conv_shortcut is None:
      return spatial.pad12(jnp.stack([q, t])) + shortcut  # both borders are zero
    q2, t2 = spatial.conv_pair(shortcut, *conv_shortcut, w_var, b_var)
    return spatial.pad12(jnp.stack([q + q2, t + t2]))

  s = spatial.fenced(stem, one)(x1, x2)
  for b, (stride, first) in enumerate(_strides(cfg)):
    a = spatial.fenced(lambda s: relu(s, 2 * b), one)(s)
    h = spatial.fenced(lambda a: conv_relu(a, 2 * b + 1, stride), one)(a)
    if first:
      sc = a if cfg.activate_shortcut else s
      s = spatial.fenced(lambda h, sc: residual(h, sc, (cfg.shortcut_size, stride)), one)(h, sc)
    else:
      s = spatial.fenced(lambda h, sc: residual(h, sc, None), one)(h, s)
  if cfg.final_activation:
    s = spatial.fenced(lambda s: relu(s, len(s1.rsqrt) - 1), one)(s)
  w_var, b_var = cfg.readout_w_std**2, cfg.readout_b_std**2
  hw = (s.shape[1] - 2) * (s.shape[2] - 2)
  nngp = w_var * jnp.sum(s[0], axis=(0, 1)) / hw + b_var  # the border is zero
  ntk = w_var * jnp.sum(s[1], axis=(0, 1)) / hw + nngp
  return Kernels(nngp, ntk)


def _tile_kernels(
  x1: jax.Array, x2: jax.Array, cfg: WRNKernelConfig, fence: bool = True
) -> Kernels:
  """Kernels of all pairs of x1 (T1, H, W, C) and x2 (T2, H, W, C), statistics included."""
  return _pair_kernels(x1, x2, input_stats(x1, cfg), input_stats(x2, cfg), cfg, fence)


def _check_inputs(x: jax.Array, name: str) -> None:
  if x.ndim != 4:
    raise ValueError(f"{name} must be images (N, H, W, C), got shape {x.shape}.")
  if isinstance(x, jax.core.Tracer):
    return  # traced inside a caller's jit: shapes only
  # Our programs compile with fast math (COMPILER_OPTIONS), which assumes no NaN/inf.
  if not np.all(np.isfinite(np.asarray(x))):
    raise ValueError(f"{name} contains NaN or inf values; expected finite images.")


_jit = functools.partial(jax.jit, compiler_options=COMPILER_OPTIONS)
_input_stats_jit = _jit(input_stats, static_argnames=("cfg",))
_pair_kernels_jit = _jit(_pair_kernels, static_argnames=("cfg", "fence"))
_tile_kernels_jit = _jit(_tile_kernels, static_argnames=("cfg", "fence"))


def make_config(
  depth: int = 28,
  w_std: float = 1.0,
  b_std: float = 0.0,
  readout_w_std: float = 1.0,
  readout_b_std: float = 0.0,
  shortcut_size: int = 1,
  activate_shortcut: bool = False,
  activation: str = "leaky_relu",
  leaky_slope: float = TRAINED_LEAKY_SLOPE,
  final_activation: bool = True,
) -> WRNKernelConfig:
  """A validated `WRNKernelConfig` from plain values (raises ValueError naming a bad one)."""
  return WRNKernelConfig(
    int(depth),
    float(w_std),
    float(b_std),
    float(readout_w_std),
    float(readout_b_std),
    int(shortcut_size),
    bool(activate_shortcut),
    str(activation),
    float(leaky_slope),
    bool(final_activation),
  ).validate()


def wrn_kernel(
  x1: jax.Array,
  x2: jax.Array | None = None,
  *,
  depth: int = 28,
  w_std: float = 1.0,
  b_std: float = 0.0,
  readout_w_std: float = 1.0,
  readout_b_std: float = 0.0,
  shortcut_size: int = 1,
  activate_shortcut: bool = False,
  activation: str = "leaky_relu",
  leaky_slope: float = TRAINED_LEAKY_SLOPE,
  final_activation: bool = True,
  jit: bool = True,
) -> Kernels:
  """NNGP and NTK of the WRN for all pairs, in one shot (use `kernel_matrix` for large N).

  Args:
    x1: (N1, H, W, C) images, e.g. log-mels (N, 32, 32, 1) float32.
    x2: (N2, H, W, C) images; None means x1.
    depth, w_std, b_std, readout_w_std, readout_b_std, shortcut_size, activate_shortcut,
      activation, leaky_slope, final_activation: see `WRNKernelConfig`.
    jit: compile (default) or run op by op (for tests, or to trace inside a caller's jit).

  Returns:
    Kernels(nngp (N1, N2), ntk (N1, N2)) in the dtype of x1.
  """
  x2 = x1 if x2 is None else x2
  _check_inputs(x1, "x1")
  _check_inputs(x2, "x2")
  chex.assert_equal_shape_suffix([x1, x2], 3)
  cfg = make_config(
    depth,
    w_std,
    b_std,
    readout_w_std,
    readout_b_std,
    shortcut_size,
    activate_shortcut,
    activation,
    leaky_slope,
    final_activation,
  )
  fn = _tile_kernels_jit if jit else _tile_kernels
  return fn(jnp.asarray(x1), jnp.asarray(x2), cfg)
