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

from bilevel_jax.models.conv_grad import chunked_weight_grad_conv, default_weight_grad_chunk

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_DENSE_INIT = nn.initializers.xavier_normal()


def _leaky_relu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, negative_slope=0.1)


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
      use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-3, name=name
    )
    conv = functools.partial(
      nn.Conv,
      kernel_init=_CONV_INIT,
      conv_general_dilated=chunked_weight_grad_conv(self.weight_grad_chunk),
    )
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
      raise ValueError(
        f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got depth={self.depth}."
      )
    if self.width < 1:
      raise ValueError(f"WideResNet width must be >= 1, got width={self.width}.")
    return (self.depth - 4) // 6

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    blocks = self.setup_check()
    if x.ndim != 4:
      raise ValueError(f"WideResNet expects (B, H, W, C) inputs, got shape {x.shape}.")
    chunk = (
      default_weight_grad_chunk() if self.weight_grad_chunk is None else self.weight_grad_chunk
    )
    y = nn.Conv(
      self.stem_filters,
      (3, 3),
      padding="SAME",
      kernel_init=_CONV_INIT,
      conv_general_dilated=chunked_weight_grad_conv(chunk),
      name="stem",
    )(x)
    for stage in range(3):
      filters = 16 * self.width << stage
      for i in range(blocks):
        y = ResidualBlock(
          filters,
          stride=2 if (stage and i == 0) else 1,
          activate_before_residual=(stage == 0 and i == 0),
          bn_momentum=self.bn_momentum,
          weight_grad_chunk=chunk,
          name=f"stage{stage}_block{i}",
        )(y, train)
    y = _leaky_relu(
      nn.BatchNorm(
        use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-3, name="bn_final"
      )(y)
    )
    embedding = jnp.mean(y, axis=(1, 2))  # (B, 64 * width)
    logits = nn.Dense(self.num_classes, kernel_init=_DENSE_INIT, name="head")(embedding)
    return logits, embedding


_REGISTRY: dict[str, Callable[..., nn.Module]] = {"wide_resnet": WideResNet}


def register(name: str, constructor: Callable[..., nn.Module]) -> None:
  """Adds a model constructor to the registry used by `get_model`."""
  _REGISTRY[name] = constructor


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Looks up a model by config name, e.g. get_model("wide_resnet", depth=28, width=2)."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model name {name!r}; known: {sorted(_REGISTRY)}.")
  return _REGISTRY[name](**kwargs)
