"""Finite-width WRN in NTK parameterization (Flax), and its empirical NNGP / NTK.

The same architecture as `wrn_kernel` (no batch norm, no pooling, activation phi, optional phi
before Flatten + Dense), with every
weight and bias drawn from N(0, 1) and scaled in the forward pass:
  conv: W_std / sqrt(k * k * C_in) * conv(x, w) + b_std * b,   dense: the same with fan-in H*W*C.
As the widths grow, the output covariance over inits tends to the NNGP and the empirical NTK
J(x) J(x')^T to the analytic NTK; the tests use this as a Monte-Carlo reference.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


class NTKConv(nn.Module):
  """SAME conv in NTK parameterization. x: (B, H, W, C_in) -> (B, H', W', features)."""

  features: int
  kernel_size: int = 3
  stride: int = 1
  w_std: float = 1.0
  b_std: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, c_in = self.kernel_size, x.shape[-1]
    w = self.param("kernel", nn.initializers.normal(1.0), (k, k, c_in, self.features))
    y = lax.conv_general_dilated(
      x, w, (self.stride, self.stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = y * (self.w_std / jnp.sqrt(k * k * c_in))
    if self.b_std:
      y = y + self.b_std * self.param("bias", nn.initializers.normal(1.0), (self.features,))
    return y


class NTKDense(nn.Module):
  """Dense readout in NTK parameterization. x: (B, D) -> (B, features)."""

  features: int
  w_std: float = 1.0
  b_std: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.param("kernel", nn.initializers.normal(1.0), (x.shape[-1], self.features))
    y = x @ w * (self.w_std / jnp.sqrt(x.shape[-1]))
    if self.b_std:
      y = y + self.b_std * self.param("bias", nn.initializers.normal(1.0), (self.features,))
    return y


class WideResNetNTK(nn.Module):
  """Pre-activation WRN without batch norm or pooling; see `wrn_kernel` for the layout.

  Attributes:
    depth: 6n + 4.
    channels: widths of the stem and of the three groups (WRN-28-k: (16, 16k, 32k, 64k)).
    num_outputs: readout width.
    activation, leaky_slope, final_activation: as in `wrn_kernel.WRNKernelConfig`.
  """

  depth: int = 28
  channels: Sequence[int] = (16, 32, 64, 128)
  num_outputs: int = 1
  w_std: float = 1.0
  b_std: float = 0.0
  readout_w_std: float = 1.0
  readout_b_std: float = 0.0
  shortcut_size: int = 1
  activate_shortcut: bool = False
  activation: str = "leaky_relu"
  leaky_slope: float = 0.1
  final_activation: bool = True

  def phi(self, x: jax.Array) -> jax.Array:
    if self.activation == "relu":
      return nn.relu(x)
    if self.activation == "leaky_relu":
      return nn.leaky_relu(x, negative_slope=self.leaky_slope)
    raise ValueError(f"activation={self.activation!r}; expected 'relu' or 'leaky_relu'.")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {self.depth}.")
    n = (self.depth - 4) // 6
    conv = lambda c, k=3, s=1: NTKConv(c, k, s, self.w_std, self.b_std)
    x = conv(self.channels[0])(x)
    for group, ch in enumerate(self.channels[1:]):
      for i in range(n):
        stride = 2 if (group > 0 and i == 0) else 1
        a = self.phi(x)
        h = conv(ch, 3, stride)(a)
        h = conv(ch)(self.phi(h))
        if i == 0:
          x = conv(ch, self.shortcut_size, stride)(a if self.activate_shortcut else x)
        x = x + h
    if self.final_activation:
      x = self.phi(x)
    x = x.reshape(x.shape[0], -1)
    return NTKDense(self.num_outputs, self.readout_w_std, self.readout_b_std)(x)


def empirical_kernels(
  model: WideResNetNTK, key: jax.Array, x1: jax.Array, x2: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """One init's empirical kernels.

  Args:
    model: the network.
    key: init key.
    x1: (N1, H, W, C); x2: (N2, H, W, C).

  Returns:
    nngp (N1, N2): f(x1) f(x2)^T averaged over the model's outputs;
    ntk (N1, N2): J0(x1) J0(x2)^T for output 0, J0 the Jacobian w.r.t. all parameters.
  """
  params = model.init(key, x1[:1])
  f1, f2 = model.apply(params, x1), model.apply(params, x2)
  nngp = f1 @ f2.T / f1.shape[-1]
  grad0 = jax.grad(lambda p, x: model.apply(p, x[None])[0, 0])
  j1 = jax.vmap(grad0, in_axes=(None, 0))(params, x1)
  j2 = jax.vmap(grad0, in_axes=(None, 0))(params, x2)
  ntk = sum(
    jnp.tensordot(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), (1, 1))
    for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2))
  )
  return nngp, ntk


def monte_carlo_kernels(
  model: WideResNetNTK, key: jax.Array, x1: jax.Array, x2: jax.Array, num_inits: int
) -> tuple[jax.Array, jax.Array]:
  """Mean over `num_inits` inits of `empirical_kernels` (one jit, a scan over inits)."""

  @jax.jit
  def run(keys, x1, x2):
    def body(acc, k):
      nngp, ntk = empirical_kernels(model, k, x1, x2)
      return (acc[0] + nngp, acc[1] + ntk), None

    zeros = jnp.zeros((x1.shape[0], x2.shape[0]), jnp.float32)
    (nngp, ntk), _ = lax.scan(body, (zeros, zeros), keys)
    return nngp / num_inits, ntk / num_inits

  return run(jax.random.split(key, num_inits), x1, x2)
