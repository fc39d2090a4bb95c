"""Convolution with its kernel gradient summed over batch slices, shared by the classifiers.

Why: XLA:CPU (jax 0.10.2) lowers the kernel gradient of a small-channel convolution to a
convolution with an (H, W, batch)-sized window, which is slow; summing per-slice kernel
gradients is the same sum in another order (benchmarks/results/cpu_step_profile.json for WRN-10-1,
benchmarks/results/small_cnn_grad_chunk.json for small_cnn).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
from jax import lax


def default_weight_grad_chunk() -> int:
  """Default `weight_grad_chunk`: 16 examples on the CPU backend, 0 (plain autodiff) elsewhere."""
  return 16 if jax.default_backend() == "cpu" else 0


def chunked_weight_grad_conv(chunk: int) -> Callable[..., jax.Array]:
  """`lax.conv_general_dilated` whose kernel gradient is summed over batch slices of `chunk`.

  Forward and input gradient are the plain convolution and its autodiff transpose; the kernel
  gradient sum_n x_n * dy_n is computed as sum over slices c of (sum_{n in c} x_n * dy_n),
  the same sum in another order. Why: XLA:CPU (jax 0.10.2) lowers the kernel gradient of a
  small-channel convolution to a convolution with an (H, W, batch)-sized window; summed over
  slices of 16 it took 1.45-2.2x less CPU time than on the whole batch of 192 for each
  WRN-10-1 layer (benchmarks/results/cpu_step_profile.json, kernel_grad). chunk <= 0, or a batch
  of at most `chunk` examples, gives the plain convolution (no custom VJP).
  """

  def conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
  ):
    plain = functools.partial(
      lax.conv_general_dilated,
      window_strides=window_strides,
      padding=padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      precision=precision,
      **kwargs,
    )
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    n = lhs.shape[dn.lhs_spec[0]]
    if chunk <= 0 or n <= chunk or feature_group_count != 1:
      return plain(lhs, rhs)

    @jax.custom_vjp
    def f(x, w):
      return plain(x, w)

    def f_fwd(x, w):
      return plain(x, w), (x, w)

    def f_bwd(res, dy):
      x, w = res
      dx = jax.vjp(lambda x_: plain(x_, w), x)[1](dy)[0]
      dw = None
      for start in range(0, n, chunk):
        xc = lax.slice_in_dim(x, start, min(start + chunk, n), axis=dn.lhs_spec[0])
        dyc = lax.slice_in_dim(dy, start, min(start + chunk, n), axis=dn.out_spec[0])
        g = jax.vjp(lambda w_, xc=xc: plain(xc, w_), w)[1](dyc)[0]
        dw = g if dw is None else dw + g
      return dx, dw

    f.defvjp(f_fwd, f_bwd)
    return f(lhs, rhs)

  return conv
