"""Wide ResNet-28-k as used by MixMatch for CIFAR-10 (no dropout), for 32 x 32 x C inputs.

Pre-activation residual blocks (BN -> leaky ReLU(0.1) -> conv), three stages of
(depth - 4) / 6 blocks with 16k, 32k, 64k channels (stride 2 entering stages 2 and 3), a 1x1
convolution on the shortcut whenever channels or stride change, and a final BN -> leaky ReLU
-> global average pool -> dense head. Convolutions carry biases and use He (fan-out) normal
initialisation, the head Glorot normal, as in the MixMatch reference code; with width 2,
depth 28 and 3 input channels this gives 1,469,642 parameters (tests derive the count).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_DENSE_INIT = nn.initializers.xavier_normal()


def _leaky_relu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, negative_slope=0.1)


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
  WRN-10-1 layer (results/probes_cpu_step_profile.json, kernel_grad). chunk <= 0, or a batch
  of at most `chunk` examples, gives the plain convolution (no custom VJP).
  """
  def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
           dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    plain = functools.partial(
        lax.conv_general_dilated, window_strides=window_strides, padding=padding,
        lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision, **kwargs)
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


class ResidualBlock(nn.Module):
  """Pre-activation block; `activate_before_residual` feeds the activated input to the shortcut."""
  filters: int
  stride: int = 1
  activate_before_residual: bool = False
  bn_momentum: float = 0.999
  weight_grad_chunk: int = 0

  @nn.compact
  def __call__(self, x0: jax.Array, train: bool) -> jax.Array:
    norm = lambda name: nn.BatchNorm(
        use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-3, name=name)
    conv = functools.partial(nn.Conv, kernel_init=_CONV_INIT,
                             conv_general_dilated=chunked_weight_grad_conv(
                                 self.weight_grad_chunk))
    x = _leaky_relu(norm("bn1")(x0))
    if self.activate_before_residual:
      x0 = x
    x = conv(self.filters, (3, 3), strides=self.stride, padding="SAME", name="conv1")(x)
    x = _leaky_relu(norm("bn2")(x))
    x = conv(self.filters, (3, 3), padding="SAME", name="conv2")(x)
    if x0.shape[-1] != self.filters or self.stride != 1:
      x0 = conv(self.filters, (1, 1), strides=self.stride, padding="SAME", name="shortcut")(x0)
    return x0 + x


class WideResNet(nn.Module):
  """WRN-depth-width. Call: (B, H, W, C) -> (logits (B, num_classes), embedding (B, 64*width)).

  The embedding is the pooled last-layer representation that the dense head reads
  (used by k-center selection and t-SNE). `weight_grad_chunk` (None: 16 on CPU, else 0) only
  changes how kernel gradients are summed (`chunked_weight_grad_conv`), not the function.
  """
  num_classes: int = 10
  depth: int = 28
  width: int = 2
  bn_momentum: float = 0.999
  stem_filters: int = 16
  weight_grad_chunk: int | None = None

  def setup_check(self) -> int:
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), "
                       f"got depth={self.depth}.")
    if self.width < 1:
      raise ValueError(f"WideResNet width must be >= 1, got width={self.width}.")
    return (self.depth - 4) // 6

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    blocks = self.setup_check()
    if x.ndim != 4:
      raise ValueError(f"WideResNet expects (B, H, W, C) inputs, got shape {x.shape}.")
    chunk = (default_weight_grad_chunk() if self.weight_grad_chunk is None
             else self.weight_grad_chunk)
    y = nn.Conv(self.stem_filters, (3, 3), padding="SAME", kernel_init=_CONV_INIT,
                conv_general_dilated=chunked_weight_grad_conv(chunk), name="stem")(x)
    for stage in range(3):
      filters = 16 * self.width << stage
      for i in range(blocks):
        y = ResidualBlock(
            filters,
            stride=2 if (stage and i == 0) else 1,
            activate_before_residual=(stage == 0 and i == 0),
            bn_momentum=self.bn_momentum,
            weight_grad_chunk=chunk,
            name=f"stage{stage}_block{i}")(y, train)
    y = _leaky_relu(nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                 epsilon=1e-3, name="bn_final")(y))
    embedding = jnp.mean(y, axis=(1, 2))  # (B, 64 * width)
    logits = nn.Dense(self.num_classes, kernel_init=_DENSE_INIT, name="head")(embedding)
    return logits, embedding


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "wide_resnet": WideResNet,
}


def register(name: str, constructor: Callable[..., nn.Module]) -> None:
  """Adds a model constructor to the registry used by `get_model`."""
  _REGISTRY[name] = constructor


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Looks up a model by config name, e.g. get_model("wide_resnet", depth=28, width=2)."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model name {name!r}; known: {sorted(_REGISTRY)}.")
  return _REGISTRY[name](**kwargs)
